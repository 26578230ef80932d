"""The attribution methods: one module per method or family, each registering its MethodInfo.

Importing this package registers every method in ``registry.METHODS``; the order here is
the order ``xaiexplain methods`` and the Slicer panel list them in.
"""
from . import gradient_cams  # noqa: F401  (Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM)
from . import gradcam_elementwise  # noqa: F401
from . import finercam  # noqa: F401
from . import eigencam  # noqa: F401  (Eigen-CAM, KPCA-CAM, Eigen-Grad-CAM)
from . import ablationcam  # noqa: F401
from . import class_activation_map  # noqa: F401  (CAM)
from . import input_gradients  # noqa: F401  (saliency, guided backprop, guided Grad-CAM)
from . import input_x_gradient  # noqa: F401
from . import fullgrad  # noqa: F401
from . import deeplift  # noqa: F401
from . import gradient_shap  # noqa: F401
from . import lrp  # noqa: F401
from . import scorecam  # noqa: F401
from . import occlusion  # noqa: F401
from . import rise  # noqa: F401
from . import smoothgrad  # noqa: F401
from . import integrated_gradients  # noqa: F401
from . import sam  # noqa: F401
from . import crm  # noqa: F401
from . import kwc  # noqa: F401
from . import attention_rollout  # noqa: F401  (Abnar & Zuidema 2020)
from . import attention_gradient_rollout  # noqa: F401  (Chefer et al. 2021)
from . import attention_legrad  # noqa: F401  (Bousselham et al. 2024)
