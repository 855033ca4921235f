"""Array layouts of the MAC-array cost kernel: the per-(config, layer) GEMM geometry scratch
`geo` (`kernels.macarray.gemm_geometry` writes it, the layer and traffic kernels read it) and
the optional columns of its config and layer inputs (`kernels.macarray.evaluate`)."""

from __future__ import annotations

# Layout of the per-(config, layer) GEMM geometry shared by all bit choices
G_FIXED, G_GROUPS, G_FR, G_FC, G_CHUNKS, G_W_ELEMS, G_META_BITS = 0, 1, 2, 3, 4, 5, 6
G_A_ELEMS, G_A_MK, G_PSUM, G_EFF, G_TILES = 7, 8, 9, 10, 11  # tiles: 11..18
G_W_ACT = 19  # 1 when the second operand is an activation (act x act)
G_FLOOR = 20  # least streaming cycles of a fold (of all its psum chunks): 0 unless pipelined
# The widest resident weight width, computed once per config (G_KNOWN = 1) by
# `model_weights`: the scratch `geo` is zeroed per config by `config_rows` and its peers
G_RES_BITS, G_KNOWN = 21, 23
G_LAST_FREE = 24  # 1 when the layer's last fold waits for no next tile (`fold_schedule`)
G_SIZE = 25
# cfg_i columns after the first nine (appended, so older 9-column configs still read)
H_PIPELINED, H_RESIDENT, H_EPILOGUE, H_PRELOAD = 9, 10, 11, 12
# lay_i columns after the first eleven (may be absent: no epilogues): 1 for a GEMM's
# epilogue; on a GEMM, the parameter bytes of its epilogues
L_EPILOGUE, L_EPI_BYTES = 11, 12
