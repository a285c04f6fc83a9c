"""Built-in data: scikit-learn's digits and a teacher-student task (offline), and torchvision's image sets.

Everything here returns plain tensors or a ``torch.utils.data.Dataset``; the Lightning adapter lives in
:mod:`prune_landscape.integrations.datamodules`. Nothing is downloaded unless ``download=True`` is asked for, and
missing files raise a :class:`FileNotFoundError` that names every file expected and where.

Modules: ``offline`` (digits, teacher-student), ``images`` (torchvision's sets), ``catalog`` (by name),
``common`` (:class:`DatasetInfo`, argument checks). Every name is importable from ``prune_landscape.data``.

Example:
    >>> from prune_landscape.data import dataset_info, digits
    >>> inputs, targets = digits("train")
    >>> tuple(inputs.shape), targets.dtype, dataset_info("digits").num_test
    ((1347, 1, 8, 8), torch.int64, 450)
"""

from prune_landscape.data.catalog import _OPTIONS, DATASETS, dataset_info, load_dataset
from prune_landscape.data.common import DatasetInfo
from prune_landscape.data.images import TORCHVISION_DATASETS
from prune_landscape.data.offline import Teacher, digits, teacher_network, teacher_student

__all__ = ["DATASETS", "TORCHVISION_DATASETS", "DatasetInfo", "Teacher", "dataset_info", "digits", "load_dataset",
           "teacher_network", "teacher_student"]
