"""Forms: the person's text → validated values (runtime.spec does the checking)."""
import shlex

from django import forms

from runtime import InvalidArgument
from runtime.spec import check_env, check_hostname, check_name, parse_cpus, parse_memory, parse_pids


def _runtime_check(fn, value):
    try:
        return fn(value)
    except InvalidArgument as e:
        raise forms.ValidationError(str(e)) from None


class LimitsForm(forms.Form):
    memory = forms.CharField(required=False, max_length=32, label="Memory limit",
                             widget=forms.TextInput(attrs={"placeholder": "e.g. 64m, 1g"}))
    cpus = forms.CharField(required=False, max_length=16, label="CPUs",
                           widget=forms.TextInput(attrs={"placeholder": "e.g. 0.5"}))
    pids = forms.CharField(required=False, max_length=16, label="Pids limit",
                           widget=forms.TextInput(attrs={"placeholder": "e.g. 64"}))

    def clean_memory(self):
        v = self.cleaned_data["memory"].strip()
        return _runtime_check(parse_memory, v) if v else None

    def clean_cpus(self):
        v = self.cleaned_data["cpus"].strip()
        return _runtime_check(parse_cpus, v) if v else None

    def clean_pids(self):
        v = self.cleaned_data["pids"].strip()
        return _runtime_check(parse_pids, v) if v else None


# One-click templates for the create form (templates/containers/create.html).
# "OOM lab": the seed's demo, a 10 MB limit and a command that allocates 15 MB
# (`tail` buffers /dev/zero's one endless line; busybox spells the size 15m).
FORM_TEMPLATES = {
    "oom-lab": {"label": "OOM lab", "image": "busybox", "memory": "10m",
                "command": "sh -c 'head -c 15m /dev/zero | tail'",
                "help": "10 MB limit, allocates 15 MB: the kernel OOM-kills tail "
                        "(or, with swap allowed, swaps). Watch the OOM kills page."},
}


class ContainerCreateForm(LimitsForm):
    field_order = ["image", "name", "command", "env", "hostname", "workdir", "network", "ports",
                   "memory", "memory_swap", "cpus", "pids",
                   "volumes", "binds", "tmpfs", "read_only", "seccomp", "setuid", "restart", "restart_max",
                   "health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period",
                   "no_healthcheck", "auto_remove", "start"]

    image = forms.ChoiceField(choices=())
    name = forms.CharField(required=False, max_length=128,
                           widget=forms.TextInput(attrs={"placeholder": "generated when empty"}))
    command = forms.CharField(required=False, max_length=4096,
                              help_text="Split into words like a shell does; never run through a shell. "
                                        "Empty: the image's command.",
                              widget=forms.TextInput(attrs={"placeholder": "sleep 300",
                                                            "class": "mono"}))
    env = forms.CharField(required=False, label="Environment",
                          help_text="One KEY=VALUE per line.",
                          widget=forms.Textarea(attrs={"rows": 3, "class": "mono",
                                                       "placeholder": "GREETING=hello"}))
    hostname = forms.CharField(required=False, max_length=255,
                               widget=forms.TextInput(attrs={"placeholder": "the container's name"}))
    seccomp = forms.ChoiceField(
        choices=[("default", "default (Docker's profile)"), ("unconfined", "unconfined (no filter)")],
        initial="default", required=False, label="Seccomp",
        help_text="Which system calls the container may make. Unconfined lets it create user "
                  "namespaces, use io_uring and the host's keyring.")
    setuid = forms.BooleanField(
        required=False, initial=False, label="Allow setuid and file capabilities",
        help_text="--security-opt no-new-privileges=false: su, sudo or a non-root ping in the "
                  "image work, as under Docker's default. Off: they lift nobody.")
    network = forms.ChoiceField(choices=(), initial="none", required=False, label="Network",
                                help_text="none: loopback only. bridge: an address on the default "
                                          "network, where containers reach each other by name.")
    ports = forms.CharField(required=False, max_length=1024, label="Published ports",
                            help_text="[IP:]HOST:CONTAINER[/tcp|udp], separated by spaces (bridged "
                                      "networks only), e.g. 127.0.0.1:8080:80",
                            widget=forms.TextInput(attrs={"placeholder": "8080:80", "class": "mono"}))
    start = forms.BooleanField(required=False, initial=True, label="Start now")
    # lifecycle (runtime/lifecycle.py): restart policy and health check
    restart = forms.ChoiceField(
        choices=[("no", "no"), ("on-failure", "on-failure"), ("always", "always"),
                 ("unless-stopped", "unless-stopped")],
        initial="no", required=False, label="Restart policy",
        help_text="Started again when it exits (on-failure: with a non-zero code), after 100 ms, "
                  "doubling each time up to a minute. Never after a stop by a person.")
    restart_max = forms.CharField(required=False, max_length=6, label="Most restarts (on-failure)",
                                  widget=forms.TextInput(attrs={"placeholder": "unlimited", "inputmode": "numeric"}))
    health_cmd = forms.CharField(required=False, max_length=4096, label="Health check command",
                                 help_text="Run in the container through sh -c; exit code 0 is healthy.",
                                 widget=forms.TextInput(attrs={"placeholder": "wget -q -O- localhost",
                                                               "class": "mono"}))
    health_interval = forms.CharField(required=False, max_length=16, label="Health interval",
                                      widget=forms.TextInput(attrs={"placeholder": "30s"}))
    health_timeout = forms.CharField(required=False, max_length=16, label="Health timeout",
                                     widget=forms.TextInput(attrs={"placeholder": "30s"}))
    health_retries = forms.CharField(required=False, max_length=6, label="Health retries",
                                     widget=forms.TextInput(attrs={"placeholder": "3", "inputmode": "numeric"}))
    health_start_period = forms.CharField(required=False, max_length=16, label="Health start period",
                                          widget=forms.TextInput(attrs={"placeholder": "0s"}))
    no_healthcheck = forms.BooleanField(
        required=False, initial=False, label="No health check (--no-healthcheck)",
        help_text="Not even the image's HEALTHCHECK is run. Leave the health fields above empty.")
    # -- working directory, --rm, --memory-swap, and what lies outside the overlay
    workdir = forms.CharField(required=False, max_length=4096, label="Working directory",
                              widget=forms.TextInput(attrs={"placeholder": "the image's", "class": "mono"}))
    memory_swap = forms.CharField(required=False, max_length=32, label="Memory + swap",
                                  help_text="--memory-swap: with a memory limit, how much memory and swap "
                                            "together (-1: unlimited swap). Empty: no swap, so the memory "
                                            "limit holds.",
                                  widget=forms.TextInput(attrs={"placeholder": "e.g. 128m"}))
    auto_remove = forms.BooleanField(required=False, initial=False, label="Remove when it exits (--rm)",
                                     help_text="Its anonymous volumes go with it; named volumes stay.")
    volumes = forms.CharField(required=False, label="Volumes",
                              help_text="One per line: NAME:/path[:ro] (a named volume, made on first use "
                                        "and filled from the image when empty) or /path (a new anonymous "
                                        "volume).",
                              widget=forms.Textarea(attrs={"rows": 2, "class": "mono",
                                                           "placeholder": "data:/var/lib/app"}))
    binds = forms.CharField(required=False, label="Bind mounts",
                            help_text="Administrators only. One per line: /host/path:/path[:ro]. The host's "
                                      "system directories and Terrarium's own are refused.",
                            widget=forms.Textarea(attrs={"rows": 2, "class": "mono",
                                                         "placeholder": "/srv/site:/www:ro"}))
    tmpfs = forms.CharField(required=False, label="tmpfs",
                            help_text="One per line: /path[:size=64m,mode=1777,ro]; nosuid, nodev, noexec. "
                                      "Its pages count against the memory limit.",
                            widget=forms.Textarea(attrs={"rows": 2, "class": "mono",
                                                         "placeholder": "/tmp:size=64m"}))
    read_only = forms.BooleanField(required=False, initial=False, label="Read-only root filesystem",
                                   help_text="--read-only: only volumes, bind mounts and tmpfs are writable.")

    def __init__(self, *args, image_choices=(), network_choices=(("none", "none"),), allow_binds=False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].choices = list(image_choices)
        self.fields["network"].choices = list(network_choices)
        if not allow_binds:
            del self.fields["binds"]
        self.templates = FORM_TEMPLATES

    def clean_workdir(self):
        from runtime.spec import check_workdir
        v = self.cleaned_data["workdir"].strip()
        return _runtime_check(check_workdir, v) if v else ""

    def _lines(self, field: str, parse) -> list:
        out = []
        for line in self.cleaned_data[field].splitlines():
            if line.strip():
                out.append(_runtime_check(parse, line.strip()))
        return out

    def clean_volumes(self):
        from runtime.mounts import parse_volume
        mounts = self._lines("volumes", parse_volume)
        if any(m.type == "bind" for m in mounts):
            raise forms.ValidationError("a host path is a bind mount: "
                                        + ("use Bind mounts" if "binds" in self.fields
                                           else "bind mounts are for administrators"))
        return mounts

    def clean_binds(self):
        from runtime.mounts import parse_volume
        mounts = self._lines("binds", parse_volume)
        if any(m.type != "bind" for m in mounts):
            raise forms.ValidationError("give a host path (absolute) before the ':'; volumes go above")
        return mounts

    def clean_tmpfs(self):
        from runtime.mounts import parse_tmpfs
        return self._lines("tmpfs", parse_tmpfs)

    def clean_name(self):
        v = self.cleaned_data["name"].strip()
        return _runtime_check(check_name, v) if v else ""

    def clean_command(self):
        v = self.cleaned_data["command"]
        try:
            return shlex.split(v)
        except ValueError as e:
            raise forms.ValidationError(f"cannot split the command: {e}") from None

    def clean_env(self):
        lines = [ln.strip() for ln in self.cleaned_data["env"].splitlines() if ln.strip()]
        return list(_runtime_check(check_env, lines))

    def clean_seccomp(self):
        return self.cleaned_data["seccomp"] or "default"

    def clean_network(self):
        return self.cleaned_data["network"] or "none"

    def clean_ports(self):
        from runtime.network import check_ports
        return list(_runtime_check(check_ports, self.cleaned_data["ports"].split()))

    def clean(self):
        data = super().clean()
        from runtime.lifecycle import check_restart, healthcheck_from_options
        policy, most = data.get("restart") or "no", (data.get("restart_max") or "").strip()
        if most and policy != "on-failure":
            self.add_error("restart_max", "a most number of restarts goes with on-failure only")
        try:
            data["restart"] = check_restart(f"{policy}:{most}" if most else policy)
        except InvalidArgument as e:
            self.add_error("restart_max", str(e))
        try:
            data["healthcheck"] = healthcheck_from_options(
                *(data.get(f) for f in ("health_cmd", "health_interval", "health_timeout",
                                        "health_retries", "health_start_period")),
                disabled=bool(data.get("no_healthcheck")))
        except InvalidArgument as e:
            self.add_error("health_cmd", str(e))
        if data.get("ports") and data.get("network") in ("none", "host"):
            self.add_error("ports", "ports are published on a bridged network only")
        swap = (data.get("memory_swap") or "").strip()
        if swap and "memory" in data:
            from runtime.spec import make_limits
            try:
                data["memory_swap"] = make_limits(memory=data["memory"], memory_swap=swap).memory_swap
            except InvalidArgument as e:
                self.add_error("memory_swap", str(e))
        else:
            data["memory_swap"] = None
        mounts = [*data.get("volumes", ()), *data.get("binds", ()), *data.get("tmpfs", ())]
        targets = [m.target for m in mounts]
        if len(set(targets)) != len(targets):
            self.add_error(None, "two mounts have the same target path")
        data["mounts"] = mounts
        return data

    def clean_hostname(self):
        v = self.cleaned_data["hostname"].strip()
        return _runtime_check(check_hostname, v) if v else ""
