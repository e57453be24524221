"""The technique names `techniques=(...)` accepts: one vocabulary, no Keras.

The built-in names are here, as plain data; a block technique registered at
run time (`keras_smallvit.layers.register_block_technique`) adds its name.
`known_techniques()` is what every check accepts: `TechniqueSpec` and
`create_model` (through `keras_smallvit.layers.techniques.technique_names`,
built from these), and `TrainConfig.validate` and the command line's check
before Keras (`keras_smallvit.models.preset_table.check_model_settings`), so
the two accept the same names and refuse an unknown one with the same message.
"""

import sys

# The papers' techniques that are not block techniques, first in every list.
PAPER_TECHNIQUES = ("spt", "lsa", "sata")
# The block techniques the package registers itself (`layers/techniques.py`: CB).
BUILTIN_BLOCK_TECHNIQUES = ("cb",)
# LSA's two elements alone (SPT/LSA paper Table 4: M-ViT / T-ViT), last;
# together they are "lsa".
LSA_ELEMENTS = ("diagonal_mask", "learnable_temperature")
# Every built-in name, in the order of `known_techniques()`.
TECHNIQUES = (*PAPER_TECHNIQUES, *BUILTIN_BLOCK_TECHNIQUES, *LSA_ELEMENTS)

_TECHNIQUES_MODULE = "keras_smallvit.layers.techniques"


def known_techniques():
    """The names `techniques=(...)` accepts now: `TECHNIQUES`, with the block
    techniques registered since (after the built-in ones). Before
    `keras_smallvit.layers.techniques` is imported (it imports Keras) no
    block technique can have been registered, and the built-in names are
    the whole vocabulary."""
    module = sys.modules.get(_TECHNIQUES_MODULE)
    if module is None or not hasattr(module, "technique_names"):
        return TECHNIQUES
    return module.technique_names()
