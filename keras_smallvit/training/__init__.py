"""Training helpers for `model.fit`: the papers' recipe as reusable parts.

    from keras_smallvit import training
    config = training.TrainConfig(model="sl_vit", dataset="cifar100")
    metrics = training.train(config)          # the whole run, resumable

or piece by piece for a script of your own:

    train_data = training.load_split(config, "train")
    model, entry = training.build_model(config, train_data.num_classes, 32)
    steps = training.steps_per_epoch(len(train_data), config)
    training.compile_model(model, config, entry, steps, train_data.num_classes)
    model.fit(training.train_dataset(train_data, config), epochs=config.epochs,
              steps_per_epoch=steps, callbacks=[training.RunFolder("runs/x")])
"""

from keras_smallvit.training.callbacks import RunFolder
from keras_smallvit.training.callbacks import replace_atomically
from keras_smallvit.training.config import TrainConfig
from keras_smallvit.training.config import apply_overrides
from keras_smallvit.training.config import smoke
from keras_smallvit.training.optimization import MultiRateAdamW
from keras_smallvit.training.optimization import learning_rate_schedule
from keras_smallvit.training.optimization import make_loss
from keras_smallvit.training.optimization import make_metrics
from keras_smallvit.training.optimization import make_optimizer
from keras_smallvit.training.optimization import sata_learning_rate_multipliers
from keras_smallvit.training.pipeline import eval_dataset
from keras_smallvit.training.pipeline import load_split
from keras_smallvit.training.pipeline import resolve_data_settings
from keras_smallvit.training.pipeline import resolve_image_size
from keras_smallvit.training.pipeline import steps_per_epoch
from keras_smallvit.training.pipeline import train_dataset
from keras_smallvit.training.runner import build_model
from keras_smallvit.training.runner import compile_model
from keras_smallvit.training.runner import export_model
from keras_smallvit.training.runner import train
