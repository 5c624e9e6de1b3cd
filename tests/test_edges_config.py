"""Configuration files at the edges: a key written twice, several files, and a --help that says what --config takes."""
import pytest

import pretrain
from edges import TINY, error_line


def test_a_key_written_twice_in_a_yaml_file_is_refused_naming_key_file_and_lines(capsys, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("epochs: 3\nlr: 0.01\nepochs: 1\n")
    line = error_line(capsys, pretrain.main, TINY + ["--config", str(config), "--save_dir", str(tmp_path / "run")])
    assert line == f"error: config file {config} sets 'epochs' twice (lines 1 and 3); keep one"
    assert not (tmp_path / "run").exists()
    nested = tmp_path / "nested.yaml"  # any mapping of the file, at any depth
    nested.write_text("classes: [0, 1]\nmonitor_ood:\n  - {a: 1, a: 2}\n")
    assert "sets 'a' twice" in error_line(capsys, pretrain.main, TINY + ["--config", str(nested)])


def test_config_takes_several_files_in_order_as_its_help_says(capsys, tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("epochs: 3\nwd: 0.5\n")
    second.write_text("epochs: 7\n")
    for argv in (["--config", str(first), str(second)], ["--config", str(first), "--config", str(second)]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            pretrain.main(TINY + argv + ["--print_config"])
        assert info.value.code == 0
        printed = capsys.readouterr().out
        assert "\nepochs: 7\n" in printed and "\nwd: 0.5\n" in printed
    with pytest.raises(SystemExit):
        pretrain.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--config YAML [YAML ...]" in help_text and "read in the order given" in help_text
