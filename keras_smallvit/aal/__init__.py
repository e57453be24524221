"""AAL: adaptive attention link-based regularization (training only).

A frozen CNN teacher's channel maps guide the class-token attention of a ViT
through trainable links (a 1x1 convolution over the stacked attention maps):
`L = CE + lambda * L_att`. The head and the teacher exist only in training;
`distiller.student` is the model to keep.

    from keras_smallvit import aal
    distiller = aal.AttentionLinkDistiller(student, teacher, links="alpha")
    distiller.compile(optimizer, loss, metrics)
    distiller.fit(data, epochs=100, callbacks=[aal.LinkLambdaScheduler(2000, "0.99@0.6667,0.98")])
    distiller.student.save("student.keras")
    distiller.link_magnitudes()  # (teacher blocks, ViT layers), the paper's Figure 2

The same teacher also serves DeiT-style soft / hard logit distillation on the
student's one head (`LogitDistiller`, or `AttentionLinkDistiller(...,
distillation="hard")` for the paper's Table 6 "CE + AAL + hard"); no
distillation token.
"""

from keras_smallvit.aal.callbacks import DEFAULT_LINK_DECAY
from keras_smallvit.aal.callbacks import DEFAULT_LINK_LAMBDA
from keras_smallvit.aal.callbacks import LinkLambdaScheduler
from keras_smallvit.aal.callbacks import link_lambda_at
from keras_smallvit.aal.callbacks import parse_link_decay
from keras_smallvit.aal.distiller import AttentionLinkDistiller
from keras_smallvit.layers.attention_link import AttentionLinkHead
from keras_smallvit.aal.links import LINK_MODES
from keras_smallvit.aal.links import link_magnitudes
from keras_smallvit.aal.links import link_matrix
from keras_smallvit.aal.logits import LogitDistillationLoss
from keras_smallvit.aal.logits import LogitDistiller
from keras_smallvit.aal.logits import logit_distillation_losses
from keras_smallvit.aal.loss import AttentionLinkLoss
from keras_smallvit.aal.loss import attention_link_loss
from keras_smallvit.aal.loss import attention_link_losses
from keras_smallvit.aal.resize import cubic_resize_matrix
from keras_smallvit.aal.resize import resize_maps
from keras_smallvit.aal.teacher import TEACHER_LAYER_CHOICES
from keras_smallvit.aal.teacher import load_teacher
from keras_smallvit.aal.teacher import select_teacher_layers
from keras_smallvit.utils.distillation import DISTILLATION_MODES

__all__ = [
    "AttentionLinkDistiller",
    "AttentionLinkHead",
    "AttentionLinkLoss",
    "DEFAULT_LINK_DECAY",
    "DEFAULT_LINK_LAMBDA",
    "DISTILLATION_MODES",
    "LINK_MODES",
    "LinkLambdaScheduler",
    "LogitDistillationLoss",
    "LogitDistiller",
    "TEACHER_LAYER_CHOICES",
    "attention_link_loss",
    "attention_link_losses",
    "cubic_resize_matrix",
    "link_lambda_at",
    "link_magnitudes",
    "link_matrix",
    "logit_distillation_losses",
    "load_teacher",
    "parse_link_decay",
    "resize_maps",
    "select_teacher_layers",
]
