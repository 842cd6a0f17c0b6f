"""Recipe: lung-nodule CT (LIDC-IDRI) with the patch-wise DDPM, the seed study that needs no pretrained weights.

The recipe is the built-in study ``lung`` (nnunet_synth/study/builtin/lung.toml):
this script is the same as ``nnunet-synth study --builtin lung`` and passes its
options on (-w WORKDIR, --dry-run, --only STEP..., --gpus, --device). The
chain, the study's settings and how to change them (copy the config and edit
it) are in docs/recipes.md and docs/study.md.

    nnunet-synth convert lidc-idri ~/data/LIDC-IDRI -d 504
    python dataset_conversion/recipe_lung_patch_ddpm.py -w lidc_study --dry-run
    python dataset_conversion/recipe_lung_patch_ddpm.py -w lidc_study
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from nnunet_synth.commands.main import main as nnunet_synth

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--builtin" in argv or any(not a.startswith("-") and a.endswith(".toml") for a in argv):
        print("recipe_lung_patch_ddpm: error: this recipe is the built-in lung study; for another config run "
              "`nnunet-synth study CONFIG`", file=sys.stderr)
        return 2
    return nnunet_synth(["study", "--builtin", "lung", *argv])


if __name__ == "__main__":
    sys.exit(main())
