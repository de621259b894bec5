"""Every method lives in its own file here; importing this package registers them all."""

from torch_slt.methods import magnitude, stg  # noqa: F401
from torch_slt.methods import grasp, random, snip, synflow  # noqa: F401
from torch_slt.methods import edgepopup, hardconcrete, supermask  # noqa: F401
from torch_slt.methods import cs  # noqa: F401
