"""The model zoo: many small trained recurrent networks, for training pruning policies that transfer across models.

Every model has a stable, versioned name (``"zoo-v1/gru-char-email-2x128"``) and a frozen :class:`ZooSpec`
recording its split, data, task kind, architecture and training config. ``make_zoo_task(name)`` trains it on first
use (at most about a minute on a 2-core CPU), caches it like the presets (:func:`~prune_env.tasks.cache.load_or_train`)
and returns a structured :class:`~prune_env.task.RNNTask`; ``resolve_task(name)`` and therefore
``PruneRNNEnv(task=name)`` accept the names too.

- **Splits.** ``train`` models are for training a policy, ``validation`` models for selecting one. The splits never
  share a (data, architecture) pair; the ``pydoc-char`` preset's model and the ``custom-gru`` preset's model are
  in neither, so they stay unseen.
- **Data.** Character LMs on the CPython help text (:func:`prune_env.tasks.pydoc_char.load_text`) and on the source
  of stdlib packages (their ``.py`` files in sorted path order, a fixed leading slice); a word LM on a slice of PTB;
  sequence classification (digits read by rows, parity, the adding problem, counting); next-value regression on
  noisy sums of sinusoids. Synthetic data come from a ``torch.Generator`` seeded by the data name, so they do not
  depend on the model seed; the data splits of the texts and of digits are fixed too. The model seed sets the
  initialisation and the minibatch order.
- **PTB** is not bundled: its directory (``train.txt``, ``valid.txt``, ``test.txt``) comes from ``path=`` or the
  environment variable ``PRUNE_RNN_PTB``. Without either, its entries raise :class:`ZooDataUnavailable` naming the
  variable, and ``zoo_names(available_only=True)`` leaves them out.
- **Chance** is recorded for every model (``metadata["chance_val"]``, ``["chance_test"]``): the accuracy of always
  predicting the most frequent training class/token, or minus the MSE of always predicting the training mean.

Build (or check) the whole zoo with a progress bar::

    python -m prune_env.tasks.zoo build --split all --seed 0

The package: :mod:`~prune_env.tasks.zoo.catalogue` (names and specs), :mod:`~prune_env.tasks.zoo.data`,
:mod:`~prune_env.tasks.zoo.scoring` (regression metric, losses, chance levels), :mod:`~prune_env.tasks.zoo.training`
(the sequence models' training loop), :mod:`~prune_env.tasks.zoo.factories` (:func:`make_zoo_task`) and
:mod:`~prune_env.tasks.zoo.build` (the command line).
"""

from prune_env.tasks.zoo.build import LEGEND, MAX_TRAIN_S, MIN_MARGIN, MIN_SKILL, build, main, table, well_above_chance
from prune_env.tasks.zoo.catalogue import (
                                           CELLS,
                                           KINDS,
                                           LM_HEADS,
                                           PREFIX,
                                           PTB_ENV,
                                           SEQ_HEADS,
                                           SEQUENCE_DATA,
                                           SPLITS,
                                           V1_FIELDS,
                                           ZOO,
                                           ZOO_V2,
                                           ZOO_VERSION,
                                           ZOOS,
                                           ZooDataUnavailable,
                                           ZooSpec,
                                           available,
                                           lookup,
                                           ptb_dir,
                                           spec_dict,
                                           spec_name,
                                           zoo_names,
)
from prune_env.tasks.zoo.data import data_generator, stdlib_text, synthetic
from prune_env.tasks.zoo.factories import defaults, make_zoo_task
from prune_env.tasks.zoo.scoring import (
                                           MSEBatchLoss,
                                           NegMSE,
                                           RegressionScorer,
                                           SampledMSELoss,
                                           class_chance,
                                           mean_chance,
)

__all__ = ["CELLS", "KINDS", "LEGEND", "LM_HEADS", "MAX_TRAIN_S", "MIN_MARGIN", "MIN_SKILL", "MSEBatchLoss",
           "NegMSE", "PREFIX", "PTB_ENV", "RegressionScorer", "SEQUENCE_DATA", "SEQ_HEADS", "SPLITS",
           "SampledMSELoss", "V1_FIELDS", "ZOO", "ZOOS", "ZOO_V2", "ZOO_VERSION", "ZooDataUnavailable", "ZooSpec",
           "available", "build", "class_chance", "data_generator", "defaults", "lookup", "main", "make_zoo_task",
           "mean_chance", "ptb_dir", "spec_dict", "spec_name", "stdlib_text", "synthetic", "table",
           "well_above_chance", "zoo_names"]
