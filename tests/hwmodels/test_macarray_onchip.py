"""MAC-array memory terms: activations kept on chip between layers, compressed operands.

Every expected figure is hand arithmetic on a 4x4 output-stationary array at 1 GHz whose DRAM
link moves 0.5 B/cycle at 1 pJ/B (`_case`), so DRAM bytes read straight off `energy_pj_dram`.
"""

import pytest

from hwmodels.macarray import evaluate
from hwmodels.target import load_target
from tests.hwmodels.test_macarray import INT8, array, gemm, layer_table, stream


def _case(layers, **change):
    target = array(dataflow="os", rows=4, cols=4, dram_bandwidth_gbps=0.5,
                   dram_energy_pj_per_byte=1.0, **change)
    return evaluate(layer_table(layers), INT8, target)


def test_a_layer_whose_activations_fit_moves_only_its_weights():
    # 16^3 GEMM at int8: ifmap, weights and ofmap are 256 B each; SRAMs are huge
    off = _case([gemm(16, 16, 16)])
    on = _case([gemm(16, 16, 16)], activations_on_chip=True)
    assert off.energy_pj_dram[0, 0] == 256 + 256 + 256
    assert on.energy_pj_dram[0, 0] == 256  # weights only
    # compute 16 folds x (4 + 4 + 16 - 2) = 352 cycles; weights 256 B / 0.5 B/cycle = 512
    assert on.cycles[0, 0] == 512 and off.cycles[0, 0] == 768 / 0.5


@pytest.mark.parametrize("ifmap_kib, ofmap_kib", [(0.25, 1e6), (1e6, 0.25)])
def test_activations_spill_when_the_smaller_buffer_cannot_hold_them(ifmap_kib, ofmap_kib):
    # 0.25 KiB double buffered leaves 128 B < 256 B: the tensor round-trips through DRAM on
    # both sides, whichever of the two swapping buffers is the small one
    c = _case([gemm(16, 16, 16)], activations_on_chip=True, ifmap_sram_kib=ifmap_kib,
              ofmap_sram_kib=ofmap_kib)
    assert c.energy_pj_dram[0, 0] == 256 + 256 + 256


def test_single_buffered_sram_holds_twice_as_much():
    # 0.25 KiB = 256 B, not halved: the 256 B activations just fit
    c = _case([gemm(16, 16, 16)], activations_on_chip=True, ifmap_sram_kib=0.25,
              ofmap_sram_kib=0.25, double_buffered=False)
    assert c.energy_pj_dram[0, 0] == 256


def test_a_matmul_of_two_activations_moves_nothing_when_both_fit():
    # attention-style [16, 16] @ [16, 16]: both operands are activations (no weights)
    layer = gemm(16, 16, 16, w_elems=0, a_in=2 * 256)
    assert _case([layer]).energy_pj_dram[0, 0] == 256 + 256 + 256
    assert _case([layer], activations_on_chip=True).energy_pj_dram[0, 0] == 0


def test_vector_layers_read_and_write_on_chip_but_fetch_their_constants():
    # 1000 elements in and out at int8; 10 constants stored as fp32 (the IR's 40 bytes)
    layer = stream(1000, 1000, 1000, w_elems=10)
    assert _case([layer]).energy_pj_dram[0, 0] == 1000 + 1000 + 40
    on = _case([layer], activations_on_chip=True)
    assert on.energy_pj_dram[0, 0] == 40
    assert on.cycles[0, 0] == 1000 / 4  # 4 lanes (one per column), no longer DRAM bound


@pytest.mark.parametrize("density, ifmap_bytes", [
    (0.25, 256 * (0.25 * 8 + 1) / 8),  # nonzeros at 8 bits + a 1-bit bitmap per element
    (0.5, 256 * (0.5 * 8 + 1) / 8),
    (0.9, 256.0),  # 256 * 8.2 / 8 > 256: the dense layout is smaller and is kept
])
def test_a_skipped_operand_moves_compressed(density, ifmap_bytes):
    c = _case([gemm(16, 16, 16, ad=density)], sparsity="skip_activations")
    assert c.energy_pj_dram[0, 0] == pytest.approx(ifmap_bytes + 256 + 256)


def test_the_on_chip_test_uses_the_dense_size_its_producer_wrote():
    # 512 B dense activations at density 0.25 compress to 512 * 3 / 8 = 192 B, which would fit
    # the 256 B left of 0.5 KiB double buffered; the producer wrote 512 B dense, so it spilled
    layer = gemm(32, 16, 16, ad=0.25)  # ifmap 512 elements, weights 256, ofmap 512
    c = _case([layer], sparsity="skip_activations", activations_on_chip=True,
              ifmap_sram_kib=0.5, ofmap_sram_kib=0.5)
    assert c.energy_pj_dram[0, 0] == pytest.approx(512 * 3 / 8 + 256 + 512)


def test_compressed_weights_under_weight_skipping():
    c = _case([gemm(16, 16, 16, wd=0.5)], sparsity="skip_weights")
    assert c.energy_pj_dram[0, 0] == pytest.approx(256 + 256 * (0.5 * 8 + 1) / 8 + 256)


def test_shipped_arrays():
    # the SCALE-Sim reference array keeps SCALE-Sim's DRAM round trip; the sparse design
    # keeps activations on chip (SCNN's IARAM/OARAM), as its YAML cites
    assert not load_target("systolic-16x16").activations_on_chip
    assert load_target("sparse-mac-32x32").activations_on_chip
