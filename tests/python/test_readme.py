"""The README's Python quick start runs as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_quick_start(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no ```python block"
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    norm = scope["norm"]
    assert norm.count("observation") == 3 and norm.count("reward") == 1
    assert (tmp_path / "norm.pt").exists()
    assert scope["deploy"](scope["obs"]).shape == (4096, 48)
