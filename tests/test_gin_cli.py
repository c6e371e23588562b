"""The gin/flags layer of the CLIs: flag parsing, bare-name search, errors, config.gin."""
import os

import pytest

import gin
from medmt5.cli import gin_utils
from medmt5.cli.gin_utils import UsageError


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_parse_flags_repeatable_and_multihost():
    flags = gin_utils.parse_flags([
        "--gin_file=a.gin", "--gin_file", "b.gin", "--gin.MODEL_DIR='/x'",
        "--gin.DataConfig.batch_size=8", "--gin_bindings=TRAIN_STEPS = 3",
        "--gin_search_paths=/p1,/p2", "--multiprocess_gpu", "--coordinator_address=h:1",
        "--process_count=2", "--process_index=1"])
    assert flags.gin_files == ["a.gin", "b.gin"]
    assert flags.gin_bindings == ["MODEL_DIR = '/x'", "DataConfig.batch_size = 8",
                                  "TRAIN_STEPS = 3"]
    assert flags.gin_search_paths == ["/p1", "/p2"]
    assert flags.multiprocess_gpu and flags.coordinator_address == "h:1"
    assert (flags.process_count, flags.process_index) == (2, 1)


@pytest.mark.parametrize("argv, message", [
    (["--gin_fle=a.gin"], "Unknown flag '--gin_fle'"),
    (["a.gin"], "Unexpected argument 'a.gin'"),
    (["--gin.MODEL_DIR"], "--gin.NAME=VALUE"),
    (["--process_count=two"], "--process_count must be an integer"),
    (["--gin_file"], "--gin_file needs a value"),
    (["--gin_file", "--gin.TRAIN_STEPS=3"], "--gin_file needs a value"),
    (["--gin_fle=a.gin"], "Did you mean --gin_file?"),
    (["--flagfile=/no/such/flags.txt"], "--flagfile: "),
])
def test_bad_flags_are_named(argv, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        gin_utils.parse_flags(argv)


def test_absl_help_and_flagfile(tmp_path, capsys):
    for flag, needles in (("--helpfull", ("USAGE TEXT", "--gin_file", "--flagfile")),
                          ("--help", ("USAGE TEXT", "--gin.NAME=VALUE", "Try --helpfull"))):
        with pytest.raises(SystemExit) as exit_:
            gin_utils.parse_flags(["--gin_file=a.gin", flag], "USAGE TEXT")
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for needle in needles:
            assert needle in out, (flag, needle)
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--gin_file=a.gin\n--gin.TRAIN_STEPS=3\n")
    flags = gin_utils.parse_flags([f"--flagfile={flagfile}", "--gin.BATCH_SIZE=2"])
    assert flags.gin_files == ["a.gin"]
    assert flags.gin_bindings == ["TRAIN_STEPS = 3", "BATCH_SIZE = 2"]
    assert flags.binding_flags == ["--gin.TRAIN_STEPS=3", "--gin.BATCH_SIZE=2"]
    # a second parse in the same process starts from the defaults (absl's FLAGS is global)
    assert gin_utils.parse_flags(["--gin_file=b.gin"]).gin_files == ["b.gin"]


def test_tools_without_gin_take_absl_flags(tmp_path, capsys):
    from medmt5.cli import convert, demo
    from prompt_tuning import export

    args = convert.parse_args(["--overwrite", "t5x-to-medmt5", "src", "dst", "--step", "5"])
    assert (args.command, args.src, args.dst, args.overwrite, args.step) == \
        ("t5x-to-medmt5", "src", "dst", True, 5)
    assert convert.parse_args(["hf-to-medmt5", "a", "b"]).step is None
    for argv, needle in ((["hf-to-medmt5", "a", "b", "--step=3"], "does not take --step"),
                         (["hf-to-medmt5", "a"], "takes SRC and DST"),
                         (["to-hf", "a", "b"], "the first argument is the command"),
                         (["medmt5-to-hf", "a", "b", "--step=x"], "--step must be an integer")):
        assert convert.main(argv) == 2
        assert needle in capsys.readouterr().err, argv
    assert export.main(["--checkpoint", str(tmp_path)]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert export.main(["--checkpoint=x", "--out=y", "--format=zip"]) == 2
    assert "--format=zip" in capsys.readouterr().err
    assert demo.main(["--finetune_steps=many"]) == 2
    assert "--finetune_steps must be an integer" in capsys.readouterr().err


def test_repo_gin_dir_is_searched_and_bare_names_resolve(tmp_path):
    repo_gin = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")
    assert os.path.realpath(repo_gin) in [os.path.realpath(d) for d in gin_utils.default_gin_dirs()]
    paths = gin_utils.search_paths([str(tmp_path)])
    assert paths[0] == str(tmp_path)
    assert gin_utils.resolve_gin_file("medmt5_tiny.gin", paths) == \
        os.path.join(os.path.realpath(repo_gin), "medmt5_tiny.gin")
    assert gin_utils.resolve_gin_file("runs/eval", paths).endswith("gin/runs/eval.gin")
    # a user folder given with --gin_search_paths wins over the shipped one
    (tmp_path / "medmt5_tiny.gin").write_text("X = 1\n")
    assert gin_utils.resolve_gin_file("medmt5_tiny.gin", paths) == str(tmp_path / "medmt5_tiny.gin")
    with pytest.raises(UsageError, match="no_such.gin: no such file"):
        gin_utils.resolve_gin_file("no_such.gin", paths)


def _parse(argv):
    gin_utils.parse_gin(gin_utils.parse_flags(argv), "medmt5.train")


def test_later_files_and_flags_win(tmp_path):
    (tmp_path / "override.gin").write_text("BATCH_SIZE = 4\nTRAIN_STEPS = 7\n")
    _parse(["--gin_file=medmt5_tiny.gin", f"--gin_file={tmp_path}/override.gin",
            "--gin.MODEL_DIR='/tmp/x'", "--gin.TRAIN_STEPS=9"])
    assert gin.query_parameter("DataConfig.batch_size").scoped_configurable_fn() == 4
    assert gin_utils.query_macro("TRAIN_STEPS") == 9
    assert gin_utils.query_macro("MODEL_DIR") == "/tmp/x"
    cfg = gin.query_parameter("train.model_config").scoped_configurable_fn()
    assert cfg.d_model == 128 and cfg.vocab_size == 2176  # models/mt5_tiny.gin via include


def test_missing_required_macros_are_all_named_with_examples():
    with pytest.raises(UsageError) as err:
        _parse(["--gin_file=models/mt5_tiny.gin", "--gin_file=runs/finetune.gin"])
    text = str(err.value)
    for macro in ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TRAIN_STEPS", "INITIAL_CHECKPOINT_PATH"):
        assert macro in text
    assert "--gin.MODEL_DIR=\"'/tmp/medmt5_run'\"" in text


def test_undefined_macro_and_unknown_binding_get_hints(tmp_path):
    (tmp_path / "uses_undefined.gin").write_text("train.train_steps = %NOT_DEFINED\n")
    with pytest.raises(UsageError, match="NOT_DEFINED"):
        _parse([f"--gin_file={tmp_path}/uses_undefined.gin"])
    with pytest.raises(UsageError, match="(?s)doesn't have a parameter named 'batch_sise'.*Hint"):
        _parse(["--gin_file=medmt5_tiny.gin", "--gin.train.batch_sise=3"])
    with pytest.raises(UsageError, match="(?s)No configurable matching 'trian'.*Hint"):
        _parse(["--gin_file=medmt5_tiny.gin", "--gin.trian.batch_size=3"])
    with pytest.raises(UsageError, match="No --gin_file given"):
        _parse([])


def test_config_gin_written_and_reparses(tmp_path):
    model_dir = tmp_path / "run"
    _parse(["--gin_file=medmt5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.TRAIN_STEPS=5"])
    path = gin_utils.write_config(str(model_dir))
    text = open(path).read()
    # gin's writer may wrap a long value onto the next line, so check names here and values
    # after parsing the file back.
    assert "TRAIN_STEPS = 5" in text and "MODEL_DIR =" in text
    assert "T5Config.d_model = 128" in text
    gin.clear_config()
    _parse([f"--gin_file={path}"])  # the written config is a complete, parseable config
    assert gin_utils.query_macro("TRAIN_STEPS") == 5
    assert gin_utils.query_macro("MODEL_DIR") == str(model_dir)


def test_cli_main_reports_usage_error_without_traceback(capsys):
    from medmt5.cli import train

    rc = train.main(["--gin_file=medmt5_tiny.gin"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("medmt5.train: error: Missing required gin macro")
    assert "MODEL_DIR" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["medmt5_tiny.gin", "medmt5_large.gin", "medmt5_xl.gin"])
def test_recipes_parse(name):
    argv = [f"--gin_file={name}", "--gin.MODEL_DIR='/tmp/x'"]
    if name != "medmt5_tiny.gin":
        argv.append("--gin.INITIAL_CHECKPOINT_PATH='/ckpt'")
    _parse(argv)
    cfg = gin.query_parameter("train.model_config").scoped_configurable_fn()
    lengths = gin_utils.query_macro("TASK_FEATURE_LENGTHS")
    steps, batch = gin_utils.query_macro("TRAIN_STEPS"), gin_utils.query_macro("BATCH_SIZE")
    if name == "medmt5_large.gin":
        assert (cfg.d_model, lengths["inputs"], lengths["targets"]) == (1024, 1024, 229)
        assert batch == 64 and steps * batch * 1024 >= 4.5e9 > (steps - 1) * batch * 1024
    if name == "medmt5_xl.gin":
        assert (cfg.d_model, lengths["inputs"], lengths["targets"]) == (2048, 480, 108)
        assert batch == 64 and steps * batch * 480 >= 4.5e9 > (steps - 1) * batch * 480


def test_every_finetune_recipe_parses():
    folder = os.path.join(gin_utils.default_gin_dirs()[0], "finetune")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".gin"))
    assert names
    for name in names:
        gin.clear_config()
        _parse([f"--gin_file=finetune/{name}", "--gin.MODEL_DIR='/tmp/x'",
                "--gin.INITIAL_CHECKPOINT_PATH='/ckpt'"])
        assert gin_utils.query_macro("MIXTURE_OR_TASK_NAME")
