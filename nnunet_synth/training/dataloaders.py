"""nnUNetTrainer.get_dataloaders with the data loaders made by overridable methods.

nnU-Net builds its ``nnUNetDataLoader`` objects inline in ``get_dataloaders``
and starts the augmentation workers there, so a trainer that needs another
loader (weighted sampling of synthetic cases, twins read next to real cases)
has to replace the whole method. This mixin does that once: the pipeline is
nnU-Net's own, step for step, and subclasses override only
``make_train_loader`` / ``make_val_loader``.
"""
from __future__ import annotations

from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA


class PluggableLoaderMixin:
    """Put before nnUNetTrainer (or a subclass of it) in the bases."""

    def make_train_loader(self, dataset_tr, initial_patch_size, transforms):
        return nnUNetDataLoader(dataset_tr, self.batch_size, initial_patch_size,
                                self.configuration_manager.patch_size, self.label_manager,
                                oversample_foreground_percent=self.oversample_foreground_percent,
                                sampling_probabilities=None, pad_sides=None, transforms=transforms,
                                probabilistic_oversampling=self.probabilistic_oversampling)

    def make_val_loader(self, dataset_val, transforms):
        return nnUNetDataLoader(dataset_val, self.batch_size, self.configuration_manager.patch_size,
                                self.configuration_manager.patch_size, self.label_manager,
                                oversample_foreground_percent=self.oversample_foreground_percent,
                                sampling_probabilities=None, pad_sides=None, transforms=transforms,
                                probabilistic_oversampling=self.probabilistic_oversampling)

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        deep_supervision_scales = self._get_deep_supervision_scales()
        rotation_for_DA, do_dummy_2d_data_aug, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        lm = self.label_manager
        regions = lm.foreground_regions if lm.has_regions else None
        tr_transforms = self.get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=lm.foreground_labels, regions=regions, ignore_label=lm.ignore_label)
        val_transforms = self.get_validation_transforms(
            deep_supervision_scales, is_cascaded=self.is_cascaded, foreground_labels=lm.foreground_labels,
            regions=regions, ignore_label=lm.ignore_label)

        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        dl_tr = self.make_train_loader(dataset_tr, initial_patch_size, tr_transforms)
        dl_val = self.make_val_loader(dataset_val, val_transforms)

        allowed_num_processes = get_allowed_n_proc_DA()
        if allowed_num_processes == 0:
            mt_gen_train = SingleThreadedAugmenter(dl_tr, None)
            mt_gen_val = SingleThreadedAugmenter(dl_val, None)
        else:
            pin_memory = self.device.type == "cuda"
            mt_gen_train = NonDetMultiThreadedAugmenter(
                data_loader=dl_tr, transform=None, num_processes=allowed_num_processes,
                num_cached=max(6, allowed_num_processes // 2), seeds=None, pin_memory=pin_memory, wait_time=0.002)
            mt_gen_val = NonDetMultiThreadedAugmenter(
                data_loader=dl_val, transform=None, num_processes=max(1, allowed_num_processes // 2),
                num_cached=max(3, allowed_num_processes // 4), seeds=None, pin_memory=pin_memory, wait_time=0.002)
        _ = next(mt_gen_train)
        _ = next(mt_gen_val)
        return mt_gen_train, mt_gen_val
