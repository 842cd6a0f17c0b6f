"""nnU-Net's training data loader, extended to return each sample's twin cropped with the same box."""
from __future__ import annotations

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from threadpoolctl import ThreadpoolController

from nnunet_synth.diffboost.store import TwinStore


class DiffBoostDataLoader(nnUNetDataLoader):
    """Batches with ``data`` (real), ``twin``, ``mix_mask`` and ``target``.

    Sampling of cases and crop boxes is nnU-Net's (``get_indices``,
    ``get_bbox``, foreground oversampling). For every sample one of the case's
    twins is chosen at random and cropped with exactly the real sample's box;
    real and twin then go through ``transforms`` together, which must be a
    ``twin_pipeline`` (it splits them again and adds the mask). A real-only case
    (no twins) uses itself as twin, so mixing leaves it unchanged.
    """

    def __init__(self, data, batch_size, patch_size, final_patch_size, label_manager, twins: TwinStore,
                 transforms, **kwargs):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager, transforms=transforms, **kwargs)
        self.twins = twins
        self._threadpools: ThreadpoolController | None = None

    def __getstate__(self):
        # A threadpool controller holds library handles; a worker process makes its own.
        return {**self.__dict__, "_threadpools": None}

    def single_threaded(self):
        """One thread per numerical library while a batch is made, as in nnU-Net's loader.

        nnU-Net calls threadpool_limits() per batch, which rescans every loaded
        library (several ms, more than reading a twin); one controller, made once,
        applies the same limit without the scan.
        """
        if self._threadpools is None:
            self._threadpools = ThreadpoolController()
        return self._threadpools.limit(limits=1, user_api=None)

    def load_sample(self, j: int, key: str) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        """(real and twin stacked as 2C channels, segmentation, twin id), cropped and padded, not augmented."""
        data, seg, _, properties = self._data.load_case(key)   # no previous stage: the trainer refuses cascades
        bbox_lbs, bbox_ubs = self.get_bbox(data.shape[1:], self.get_do_oversample(j), properties['class_locations'])
        bbox = [[lb, ub] for lb, ub in zip(bbox_lbs, bbox_ubs)]
        real = crop_and_pad_nd(data, bbox, 0)
        twin_id, twin = self.twins.choose(key)
        twin = real if twin is None else crop_and_pad_nd(twin, bbox, 0)
        image = torch.from_numpy(np.concatenate((real, twin))).float()
        seg = torch.from_numpy(crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16)).to(torch.int16)
        if self.patch_size_was_2d:
            image, seg = image[:, 0], seg[:, 0]
        return image, seg, twin_id

    def generate_train_batch(self):
        keys = self.get_indices()
        batch: dict[str, object] = {}
        twin_keys = []
        with torch.no_grad(), self.single_threaded():
            for j, key in enumerate(keys):
                image, seg, twin_id = self.load_sample(j, key)
                twin_keys.append(twin_id)
                sample = self.transforms(image=image, segmentation=seg)
                for name, value in (("data", sample["image"]), ("twin", sample["twin"]),
                                    ("mix_mask", sample["mix_mask"]), ("target", sample["segmentation"])):
                    _store(batch, name, j, value, self.batch_size)
        batch.update(keys=keys, twin_keys=twin_keys)
        return batch


def _store(batch: dict, name: str, j: int, value, batch_size: int) -> None:
    """Write sample j into preallocated batch tensors (a list of them for deep supervision)."""
    if isinstance(value, list):
        if name not in batch:
            batch[name] = [torch.empty((batch_size, *v.shape), dtype=v.dtype) for v in value]
        for target, v in zip(batch[name], value):
            target[j] = v
    else:
        if name not in batch:
            batch[name] = torch.empty((batch_size, *value.shape), dtype=value.dtype)
        batch[name][j] = value
