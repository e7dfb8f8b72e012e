"""tfssl-launch caps each local worker's thread pools so K workers share the cores instead of each taking all."""
import pytest

from tfssl.cli.launch import thread_env


@pytest.mark.parametrize("threads, workers, cpus, want", [(0, 2, 2, "1"), (0, 3, 8, "2"), (0, 4, 2, "1"),
                                                          (4, 2, 2, "4")])
def test_threads_per_worker(threads, workers, cpus, want, monkeypatch):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_env(threads, workers, cpus) == {"TF_NUM_INTRAOP_THREADS": want, "OMP_NUM_THREADS": want}


def test_default_threads_and_the_users_environment_are_left_alone(monkeypatch):
    assert thread_env(-1, 2, 2) == {}
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert thread_env(0, 2, 2) == {"TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "7"}


def test_bad_value_is_a_one_line_error():
    with pytest.raises(ValueError, match="--threads_per_worker") as error:
        thread_env(-2, 2, 2)
    assert "\n" not in str(error.value)
