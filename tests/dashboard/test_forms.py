from dashboard.containers.forms import ContainerCreateForm, LimitsForm

IMAGES = [("busybox", "busybox"), ("lab", "lab")]


def form(**data):
    base = {"image": "busybox", "name": "", "command": "", "env": "", "hostname": "",
            "memory": "", "cpus": "", "pids": "", "start": "on"}
    base.update(data)
    return ContainerCreateForm(base, image_choices=IMAGES)


def test_valid_form_parses_every_field():
    f = form(name="web", command="sh -c 'echo hello; sleep 1'", env="A=1\n\nB=two words\n",
             hostname="web-1", memory="32m", cpus="0.5", pids="64")
    assert f.is_valid(), f.errors
    d = f.cleaned_data
    assert d["command"] == ["sh", "-c", "echo hello; sleep 1"]   # split like a shell, not run by one
    assert d["env"] == ["A=1", "B=two words"]
    assert d["memory"] == 32 << 20 and d["cpus"] == 0.5 and d["pids"] == 64
    assert d["start"] is True and d["name"] == "web"


def test_empty_optional_fields_mean_defaults():
    f = form(start="")
    assert f.is_valid(), f.errors
    assert f.cleaned_data["command"] == [] and f.cleaned_data["memory"] is None
    assert f.cleaned_data["start"] is False


def test_bad_memory_is_a_field_error_with_the_runtime_message():
    f = form(memory="lots")
    assert not f.is_valid()
    assert "invalid memory limit 'lots'" in f.errors["memory"][0]
    assert not form(memory="1m").is_valid()      # below the runtime's floor


def test_shell_syntax_errors_and_bad_values_are_field_errors():
    f = form(command="echo 'unterminated", name="-bad", env="NOEQUALS", hostname="bad_host",
             cpus="zero", pids="-1", image="nope")
    assert not f.is_valid()
    assert set(f.errors) == {"command", "name", "env", "hostname", "cpus", "pids", "image"}
    assert "cannot split the command" in f.errors["command"][0]


def test_limits_form():
    f = LimitsForm({"memory": "1g", "cpus": "", "pids": "10"})
    assert f.is_valid()
    assert f.cleaned_data == {"memory": 1 << 30, "cpus": None, "pids": 10}
    assert not LimitsForm({"memory": "64x", "cpus": "", "pids": ""}).is_valid()


def test_seccomp_choice_defaults_and_refuses_anything_else():
    f = form()
    assert f.is_valid() and f.cleaned_data["seccomp"] == "default"
    f = form(seccomp="unconfined")
    assert f.is_valid() and f.cleaned_data["seccomp"] == "unconfined"
    f = form(seccomp="/etc/profile.json")        # custom profiles are the CLI's
    assert not f.is_valid() and set(f.errors) == {"seccomp"}


def test_setuid_is_off_unless_ticked():
    f, g = form(), form(setuid="on")
    assert (f.is_valid(), f.cleaned_data["setuid"], g.is_valid(), g.cleaned_data["setuid"]) == (
        True, False, True, True)
