"""Keras layers for the small-dataset ViT techniques (SPT, LSA, SATA, CB) and
their one spec (`TechniqueSpec`), and AAL's head (the rest of AAL is
`keras_smallvit.aal`, which imports it from here: no import runs upward)."""

from keras_smallvit.layers.attention import LocalitySelfAttention
from keras_smallvit.layers.attention_link import AttentionLinkHead  # AAL's head (training only: keras_smallvit.aal)
from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.context_broadcasting import ContextBroadcasting
from keras_smallvit.layers.embedding import ClassTokenAndPositionEmbedding
from keras_smallvit.layers.patching import PatchEmbedding
from keras_smallvit.layers.patching import ShiftedPatchTokenization
from keras_smallvit.layers.stochastic_depth import StochasticDepth
from keras_smallvit.layers.suppression import TrivialAttentionSuppression
from keras_smallvit.layers.techniques import BlockTechnique
from keras_smallvit.layers.techniques import TechniqueSpec
from keras_smallvit.layers.techniques import register_block_technique
from keras_smallvit.layers.transformer_block import TransformerBlock

__all__ = [
    "AttentionLinkHead",
    "BlockTechnique",
    "ClassTokenAndPositionEmbedding",
    "ContextBroadcasting",
    "LocalitySelfAttention",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "ShiftedPatchTokenization",
    "StochasticDepth",
    "TechniqueSpec",
    "TransformerBlock",
    "TrivialAttentionSuppression",
    "register_block_technique",
]
