"""data.benchmarks: OpenOOD v1.5's presets over a tiny folder in OpenOOD's data layout."""
import pytest
from PIL import Image

import data
from data.benchmarks import BENCHMARKS, SOURCES, benchmark_specs
from test_data_files import assert_one_line_naming as one_line_naming


def write_part(root, benchmark, part, splits, labelled):
    """Two images in the part's folder and its list file(s), in OpenOOD's layout."""
    tier = SOURCES[part.source].tier
    for split in splits:
        lines = []
        for i in range(2):
            relative = f"{part.source}/{split}/c{i}/{part.label}_{i}.png"
            path = root / tier / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(path)
            lines.append(f"{relative} {i if labelled else -1}")
        lists = root / "benchmark_imglist" / benchmark
        lists.mkdir(parents=True, exist_ok=True)
        (lists / part.list.replace("{split}", split)).write_text("\n".join(lines) + "\n")


def openood_root(root, benchmark):
    preset = BENCHMARKS[benchmark]
    write_part(root, benchmark, preset.id, ("train", "val", "test"), labelled=True)
    for part in (*preset.near, *preset.far):
        write_part(root, benchmark, part, ("test",), labelled=False)
    write_part(root, benchmark, preset.val_ood, ("val",), labelled=False)
    return root


def test_presets_are_openood_v1_5s_lists():
    def lists(parts):
        return [(p.label, p.list) for p in parts]

    cifar10, cifar100, imagenet200 = BENCHMARKS["cifar10"], BENCHMARKS["cifar100"], BENCHMARKS["imagenet200"]
    assert lists(cifar10.near) == [("cifar100", "test_cifar100.txt"), ("tin", "test_tin.txt")]
    assert lists(cifar100.near) == [("cifar10", "test_cifar10.txt"), ("tin", "test_tin.txt")]
    far = [("mnist", "test_mnist.txt"), ("svhn", "test_svhn.txt"), ("texture", "test_texture.txt"),
           ("places365", "test_places365.txt")]
    assert lists(cifar10.far) == lists(cifar100.far) == far
    assert cifar10.val_ood.list == cifar100.val_ood.list == "val_tin.txt"
    assert lists(imagenet200.near) == [("ssb_hard", "test_ssb_hard.txt"), ("ninco", "test_ninco.txt")]
    assert lists(imagenet200.far) == [("inaturalist", "test_inaturalist.txt"), ("textures", "test_textures.txt"),
                                      ("openimage_o", "test_openimage_o.txt")]
    assert imagenet200.val_ood.list == "val_openimage_o.txt" and imagenet200.id.list == "{split}_imagenet200.txt"
    # Textures of ImageNet-200 lie with the classic images, as in OpenOOD
    assert SOURCES[imagenet200.far[1].source].tier == "images_classic" and SOURCES["ninco"].tier == "images_largescale"


def test_benchmark_specs_build_every_set(tmp_path):
    root = openood_root(tmp_path / "data", "cifar10")
    bench = benchmark_specs("cifar10", str(root))
    assert (bench.name, len(bench.near), len(bench.far)) == ("cifar10", 2, 4)
    id_spec = data.parse_spec(bench.id)
    assert id_spec.label == "cifar10" and id_spec.options["root"] == str(root / "images_classic")
    train = data.build_dataset(**id_spec.kwargs(), split="train")
    test = data.build_dataset(**id_spec.kwargs(), split="test")
    assert train.classes == ["c0", "c1"] and test.targets.tolist() == [0, 1] and "/cifar10/test/" in test.paths[0]
    labels = []
    for text in (*bench.near, *bench.far, bench.val_ood):
        spec = data.parse_spec(text)
        dataset = data.build_dataset(**spec.kwargs(), split="val" if text == bench.val_ood else "test")
        assert len(dataset) == 2 and dataset.classes == ["unlabelled"], text
        labels.append(spec.label)
    assert labels == ["cifar100", "tin", "mnist", "svhn", "texture", "places365", "val_tin"]
    assert data.parse_spec(bench.val_ood).options["list"].endswith("benchmark_imglist/cifar10/val_tin.txt")


def test_imagenet200_reads_textures_from_the_classic_images(tmp_path):
    bench = benchmark_specs("imagenet200", openood_root(tmp_path, "imagenet200"))
    textures = data.parse_spec(bench.far[1])
    assert textures.label == "textures" and textures.options["root"] == str(tmp_path / "images_classic")
    assert data.parse_spec(bench.near[1]).options["root"] == str(tmp_path / "images_largescale")
    assert len(data.build_dataset(**textures.kwargs(), split="test")) == 2


def test_missing_pieces_are_one_line_before_anything_runs(tmp_path):
    root = openood_root(tmp_path / "data", "cifar100")
    (root / "benchmark_imglist" / "cifar100" / "test_svhn.txt").unlink()
    with pytest.raises(data.DatasetError) as error:
        benchmark_specs("cifar100", root)
    one_line_naming(error, root / "benchmark_imglist" / "cifar100", "test_svhn.txt", "benchmark_imglist.zip",
                    "download.py", "nothing is downloaded")
    root = openood_root(tmp_path / "again", "cifar100")
    for path in sorted((root / "images_classic" / "places365").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "images_classic" / "places365").rmdir()
    with pytest.raises(data.DatasetError) as error:
        benchmark_specs("cifar100", root)
    one_line_naming(error, root / "images_classic" / "places365", "category folders", "'places365' archive",
                    "places2.csail.mit.edu", "nothing is downloaded")
    (root / "images_classic" / "places365").mkdir()  # there, but not in OpenOOD's layout
    with pytest.raises(data.DatasetError) as error:
        benchmark_specs("cifar100", root)
    one_line_naming(error, "places365_0.png", "the first image of test_places365.txt")
    with pytest.raises(data.DatasetError, match="unknown benchmark 'imagenet'; available: cifar10, cifar100, imagenet200"):
        benchmark_specs("imagenet", root)
    with pytest.raises(data.DatasetError) as error:
        benchmark_specs("cifar10", tmp_path / "nowhere")
    one_line_naming(error, tmp_path / "nowhere", "not a folder", "benchmark_imglist/")
    comma = tmp_path / "a,b"
    comma.mkdir()
    with pytest.raises(data.DatasetError, match="comma"):
        benchmark_specs("cifar10", comma)
