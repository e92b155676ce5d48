"""Imports every built-in model module so their ``@register_model`` builders run.

Add a line here for each new model file.
"""

import instaseg.models.mask_rcnn  # noqa: F401
import instaseg.models.simple_fpn  # noqa: F401
import instaseg.models.solov2  # noqa: F401
import instaseg.models.yolact  # noqa: F401
