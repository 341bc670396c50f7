"""Which threads run torch's parallel operations: a model is loaded on a thread that then ends, and `aios` makes
torch's workers spin briefly between operations unless the environment says otherwise."""

from __future__ import annotations

import threading

import pytest

from aios.torch_threads import SPIN_COUNT, on_passing_thread, spin_briefly


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        pytest.param({}, "linux", {"GOMP_SPINCOUNT": str(SPIN_COUNT)}, id="unset: brief spinning"),
        pytest.param({}, "darwin", {"OMP_WAIT_POLICY": "PASSIVE"}, id="not libgomp: sleep at once"),
        pytest.param({"OMP_WAIT_POLICY": "PASSIVE"}, "linux", {"OMP_WAIT_POLICY": "PASSIVE"}, id="passive kept"),
        pytest.param({"OMP_WAIT_POLICY": "active"}, "linux", {"OMP_WAIT_POLICY": "active"}, id="active kept"),
        pytest.param({"GOMP_SPINCOUNT": "0"}, "linux", {"GOMP_SPINCOUNT": "0"}, id="own spin count kept"),
        pytest.param({"GOMP_SPINCOUNT": "0"}, "darwin", {"GOMP_SPINCOUNT": "0"}, id="own setting kept elsewhere"),
        pytest.param({"OMP_WAIT_POLICY": ""}, "linux", {"OMP_WAIT_POLICY": ""}, id="set empty: left to libgomp"),
        pytest.param({"PATH": "/bin"}, "linux", {"PATH": "/bin", "GOMP_SPINCOUNT": str(SPIN_COUNT)},
                     id="others untouched"),
    ],
)
def test_aios_spins_briefly_unless_the_environment_says_how_threads_wait(environ: dict[str, str], platform: str,
                                                                          expected: dict[str, str]) -> None:
    spin_briefly(environ, platform)
    assert environ == expected


def test_work_on_a_passing_thread_returns_its_value_from_a_thread_that_has_ended() -> None:
    ran_on: list[threading.Thread] = []

    def work() -> str:
        ran_on.append(threading.current_thread())
        return "loaded"

    assert on_passing_thread(work, "load") == "loaded"
    (thread,) = ran_on
    assert thread is not threading.current_thread() and thread.name == "load"
    assert not thread.is_alive()


def test_work_on_a_passing_thread_raises_its_own_error_here() -> None:
    class Broken(Exception):
        pass

    error = Broken("the weights are truncated")

    def work() -> None:
        raise error

    with pytest.raises(Broken) as caught:
        on_passing_thread(work, "load")
    assert caught.value is error
