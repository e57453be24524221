from keras_smallvit.models.vit.vit_backbone import ViTBackbone
