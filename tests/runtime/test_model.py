"""runtime/model.py: the records are plain named tuples, declared with types.

The class syntax is typing.NamedTuple's (what mypy reads); at run time
TypedRecord's metaclass builds a collections.namedtuple from it, so that no
command pays for importing typing.
"""
import pickle
import subprocess
import sys

import pytest

from runtime.model import Container, Healthcheck, ImageConfig, Limits, LogConfig, Mount, Spec, TypedRecord, to_dict


def test_records_are_named_tuples_with_their_fields_and_defaults():
    assert Limits() == (None, None, None, None) and isinstance(Limits(), tuple)
    assert Limits(64 << 20).memory == 64 << 20
    assert Healthcheck._field_defaults == {"test": (), "interval": 30.0, "timeout": 30.0, "retries": 3,
                                           "start_period": 0.0}
    assert ImageConfig().cmd == ("sh",) and ImageConfig().workdir == "/"
    assert Mount("tmpfs", "", "/tmp") == ("tmpfs", "", "/tmp", False, None, None)
    spec = Spec("busybox")
    assert (spec.image, spec.limits, spec.log, spec.network, spec.restart) == \
        ("busybox", Limits(), LogConfig(10 << 20, 3), "none", "no")
    c = Container("id", "web", "busybox", ("sh",), (), "web", "/", Limits(), "created", 1.0)
    assert c._fields[:10] == ("id", "name", "image", "cmd", "env", "hostname", "workdir", "limits",
                              "status", "created_at")
    assert (c.pid, c.seccomp, c.no_new_privileges, dict(c.namespaces)) == (None, "default", True, {})
    assert to_dict(c)["limits"] == {"memory": None, "memory_swap": None, "cpus": None, "pids": None}
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert Container.__qualname__ == "Container" and Container.__module__ == "runtime.model"


def test_a_record_is_fields_and_a_docstring_only():
    with pytest.raises(TypeError, match="fields and a docstring only"):
        class WithMethod(TypedRecord):
            a: int

            def twice(self) -> int:
                return 2 * self.a
    with pytest.raises(TypeError, match="without a default follows"):
        class DefaultFirst(TypedRecord):
            a: int = 1
            b: int


def test_the_command_paths_do_not_import_typing():
    """The types are for mypy: `typing` (about 2 ms) stays out of a command's start."""
    code = ("import sys, runtime.client, runtime.cli, runtime.containers, runtime.shim, runtime.execute; "
            "print('typing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
