"""The three training stages (paper Sec. IV-B), one module each, run by ``python -m training.train``:

- ``geometry``: stage 1, the geometry stream on synthetic faces and fitted photos (L_gs);
- ``texture``: stage 2, the texture stream on synthetic faces with known albedo (L_rec, L_con, L_adv);
- ``finetune``: stage 3, both streams end to end through the rasterizer on real photos (L_pix, L_ali,
  and stage 1's L_gs as an anchor).

They share ``common``: the validation seed, ``to_device``, L_gs with its weights and ablations, the
projected landmarks and their NME, and the texture stream's inputs. The stages import ``common``
and never each other, so the import graph is a tree: the CLI, the stages, ``common``.
"""
