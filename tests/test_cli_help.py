"""Every ``--help`` renders clean text, and options are spelled as nnU-Net users type them.

The help texts are rendered in process with argparse's ``format_help()`` (the
same text ``--help`` prints), for every command, every generator of ``fit`` and
``generate``, every converter of ``convert``, and the standalone tools in
``nnunet_synth/commands/`` (``python -m nnunet_synth.commands.tiny_sd``).
"""
import argparse
import importlib
import pkgutil
import re

import pytest

import nnunet_synth.commands as commands_package
from nnunet_synth.commands import COMMANDS
from nnunet_synth.commands.main import build_parser
from nnunet_synth.commands.options import OUTPUT_KINDS, says_kind

# Modules of the command layer that are helpers, not commands.
HELPERS = {"main", "runner", "options", "generator_options"}

LEAKS = [
    (re.compile(r"%\(|%%|%[sdrf]\b"), "unformatted %"),
    (re.compile(r"\{'|dict\(|\bNamespace\("), "a Python dict or object"),
    (re.compile(r"<(function|class|module|bound method)\b|object at 0x"), "a Python repr"),
    (re.compile(r"\(default:? *(None|\(\)|\[\]|)\)|default None\b|\[None\]"), "a default printed as None or empty"),
    (re.compile(r"\bNone\b"), "the word None"),
]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _standalone_tools() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(commands_package.__path__):
        module_name = f"nnunet_synth.commands.{info.name}"
        if info.name in HELPERS or any(module_name == m for m, _ in COMMANDS.values()):
            continue
        names.append(info.name)
    return names


def all_parsers():
    """(title, parser) for every help text a user can ask for."""
    yield "nnunet-synth", build_parser()
    for command in COMMANDS:
        parser = _subparsers(build_parser(command))[command]
        yield command, parser
        for name, sub in _subparsers(parser).items():
            yield f"{command} {name}", sub
    for tool in _standalone_tools():
        module = importlib.import_module(f"nnunet_synth.commands.{tool}")
        parser = argparse.ArgumentParser(prog=f"python -m nnunet_synth.commands.{tool}", description=module.__doc__)
        module.add_arguments(parser)
        yield tool, parser


PARSERS = dict(all_parsers())


def test_every_command_generator_and_converter_has_a_help_text():
    assert set(COMMANDS) <= set(PARSERS)
    from nnunet_synth.convert.registry import CONVERTERS
    from nnunet_synth.generators import registry

    for name in registry.names():
        assert f"fit {name}" in PARSERS and f"generate {name}" in PARSERS
    assert {f"convert {name}" for name in CONVERTERS} <= set(PARSERS)
    assert "tiny_sd" in PARSERS


@pytest.mark.parametrize("title", sorted(PARSERS))
def test_help_has_no_leaked_formatting(title):
    text = PARSERS[title].format_help()
    assert text.strip(), title
    for pattern, what in LEAKS:
        m = pattern.search(text)
        assert m is None, f"{title} --help shows {what}: ...{text[max(0, m.start() - 60):m.end() + 60]}..."


def test_the_lidc_line_of_convert_help_keeps_its_percent():
    text = " ".join(PARSERS["convert"].format_help().split())
    assert "50% reader consensus" in text


def _option(parser, flag):
    return next((a for a in parser._actions if flag in a.option_strings), None)


@pytest.mark.parametrize("title", sorted(PARSERS))
def test_o_says_what_it_takes(title):
    """-o is a dataset id (-o ID), a folder (-o DIR) or a file (-o FILE), and its help starts by saying which."""
    action = _option(PARSERS[title], "-o")
    if action is None:
        return
    kinds = [kind for kind, (what, _) in OUTPUT_KINDS.items()
             if says_kind(action.metavar, kind) and (action.help or "").startswith(what + ":")]
    assert len(kinds) == 1, f"{title}: -o {action.metavar}: {action.help!r}"
    if kinds == ["id"]:
        assert action.type is int, title


def test_device_accepts_nnunets_spelling_wherever_there_is_a_device():
    for title, parser in PARSERS.items():
        action = _option(parser, "--device")
        if action is not None and action.help != argparse.SUPPRESS:
            assert "-device" in action.option_strings, title
    args = build_parser("generate").parse_args(["generate", "patch-ddpm", "-m", "m", "-d", "901", "-o", "902",
                                                "--mode", "twins", "-k", "1", "-device", "cpu"])
    assert (args.dataset, args.device) == ("901", "cpu")
    assert build_parser("demo").parse_args(["demo", "-device", "cpu"]).device == "cpu"


@pytest.mark.parametrize("argv, reason", [
    (["twins", "-d", "901", "-s", "902", "-c", "2d", "-device", "cpu"], "twins has no device option"),
    (["expand", "-d", "901", "-s", "902", "-o", "903", "-device", "cpu"], "expand has no device option"),
    (["fit", "patch-ddpm", "-d", "901", "-f", "0", "-o", "m", "-device", "cpu"], "--cpu"),
])
def test_device_on_a_command_without_one_is_refused_not_read_as_d(argv, reason, capsys):
    """Without the refusal, argparse reads '-device cpu' as '-d evice' and a stray 'cpu'."""
    with pytest.raises(SystemExit) as e:
        build_parser(argv[0]).parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "-device" in err and reason in err, err


def test_nnunet_spellings():
    fit = build_parser("fit").parse_args(["fit", "patch-ddpm", "-d", "901", "-f", "all", "-o", "m"])
    assert fit.fold == "all"
    expand = build_parser("expand").parse_args(["expand", "-d", "901", "-s", "902", "-o", "903", "-c", "2d",
                                                "3d_fullres", "-p", "P", "-np", "3"])
    assert (expand.preprocess, expand.plans, expand.num_processes) == (["2d", "3d_fullres"], "P", 3)
    twins = build_parser("twins").parse_args(["twins", "-d", "901", "-s", "902", "-c", "2d", "-p", "P", "-np", "2"])
    assert (twins.real, twins.configuration, twins.plans, twins.num_processes) == ("901", "2d", "P", 2)
    phantom = build_parser("phantom")
    assert phantom.parse_args(["phantom", "-np", "3"]).workers == 3
    assert phantom.parse_args(["phantom", "--workers", "3"]).workers == 3  # the earlier name keeps working
    assert "-np" in PARSERS["phantom"].format_help() and "--workers" not in PARSERS["phantom"].format_help()
