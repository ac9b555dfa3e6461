"""The appendix of RELIABILITY.md has 261 bad-input cases; every one is a row of a table here."""

from ._api_cases import SECTIONS as API
from ._cli_cases import SECTIONS as CLI

#: rows per appendix section, as RELIABILITY.md's summary table counts them
APPENDIX = {
    "CLI unlearn: names & numbers": 35,
    "CLI unlearn --model / evaluate: checkpoints": 19,
    "CLI unlearn: output directory": 8,
    "CLI study: YAML & flags": 58,
    "CLI report / demo": 6,
    "API optimizers.make": 34,
    "API landscape": 51,
    "API unlearning (unlearn/UnlearnConfig/load)": 32,
    "API attacks": 8,
    "API StudyConfig": 10,
}


def test_every_appendix_case_is_a_row():
    sections = {**CLI, **API}
    assert {k: len(v) for k, v in sections.items()} == APPENDIX
    ids = [r[0] for rows in sections.values() for r in rows]
    assert len(ids) == sum(APPENDIX.values()) == 261
    assert len(set(ids)) == len(ids)
