"""The `ort` marker follows imports (tests/ort_reach.py), checked on a small tree built here and
on files of this repository whose needs are known by reading them."""

from __future__ import annotations

from pathlib import Path

from tests.ort_reach import ort_modules

ROOT = Path(__file__).resolve().parents[1]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_marks_follow_module_level_imports_and_a_tests_own_lazy_ones(tmp_path):
    write(tmp_path, {
        "lib/__init__.py": "",
        "lib/runner.py": "def run():\n    import onnxruntime\n",        # uses ort lazily
        "lib/helper.py": "from lib import runner\n",                       # reaches it
        "lib/api.py": "def f():\n    from lib import helper\n",           # lazy: not followed
        "lib/pure.py": "S = 'onnxruntime'  # a string, no import\n",
        "tests/__init__.py": "",
        "tests/test_a.py": "def test():\n    from lib.helper import x\n",  # a test's lazy import
        "tests/test_b.py": "from lib import api, pure\n",
        "tests/test_c.py": "import onnxruntime as ort\n",
    })
    hit = ort_modules(tmp_path, ("lib", "tests"))
    assert sorted(hit) == ["lib.helper", "lib.runner", "tests.test_a", "tests.test_c"]


def test_repository_files_known_to_need_onnxruntime_are_marked():
    hit = ort_modules(ROOT)
    # opcheck compares against onnxruntime sessions; test_evaluate imports onnxruntime itself
    assert {"tests.compiler.opcheck", "tests.compiler.test_ops_conv",
            "tests.edgesim.test_evaluate", "edgesim.evaluate", "edgesim.validate"} <= hit
    # the CPU model only names the runtime "onnxruntime" in strings; the IR never imports it
    assert not {"tests.hwmodels.test_cpu", "compiler.ir", "hwmodels.cpu"} & hit
