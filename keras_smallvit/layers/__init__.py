"""Keras layers for the small-dataset ViT techniques (SPT, LSA, SATA, CB)."""

from keras_smallvit.layers.attention import LocalitySelfAttention
from keras_smallvit.layers.attention import MultiHeadSelfAttention
from keras_smallvit.layers.context_broadcasting import ContextBroadcasting
from keras_smallvit.layers.embedding import ClassTokenAndPositionEmbedding
from keras_smallvit.layers.patching import PatchEmbedding
from keras_smallvit.layers.patching import ShiftedPatchTokenization
from keras_smallvit.layers.stochastic_depth import StochasticDepth
from keras_smallvit.layers.suppression import TrivialAttentionSuppression
from keras_smallvit.layers.transformer_block import TransformerBlock
from keras_smallvit.aal.head import AttentionLinkHead  # AAL (training only): keras_smallvit.aal

__all__ = [
    "AttentionLinkHead",
    "ClassTokenAndPositionEmbedding",
    "ContextBroadcasting",
    "LocalitySelfAttention",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "ShiftedPatchTokenization",
    "StochasticDepth",
    "TransformerBlock",
    "TrivialAttentionSuppression",
]
