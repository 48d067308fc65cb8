"""The Django admin changes containers and images only through the runtime.

Deleting a mirrored row used to report success while the container came back
on the next list, and "Add image" made rows with no files behind them."""
import secrets

import pytest
from playwright.sync_api import expect

from runtime.errors import TerrariumError
from runtime.mounts import parse_volume
from runtime.spec import make_spec
from tests.fixtures_web import log_in
from tests.webstack import manage

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def superuser(server):
    """A superuser (like `make run`'s admin account): every model permission."""
    username, password = f"root-{secrets.token_hex(3)}", f"pw-{secrets.token_hex(8)}"
    manage(server.env, "shell", "-c",
           "from django.contrib.auth.models import User; "
           f"User.objects.create_superuser({username!r}, '', {password!r})")
    return username, password


def test_admin_removes_containers_through_the_runtime(browser, server, superuser, rt, made, name):
    stopped = rt.create(make_spec(image="busybox", name=name + "-a", cmd=["true"]))
    running = rt.create(make_spec(image="busybox", name=name + "-b", cmd=["sleep", "300"]))
    rt.start(running.id)
    page = log_in(browser, server, *superuser)
    try:
        page.goto(server + "/")                          # the list syncs the mirror
        page.goto(server + "/admin/containers/container/")
        expect(page.locator("select[name=action] option")).to_have_text(
            ["---------", "Remove selected containers (stopped ones, through the runtime)"])
        for c in (stopped, running):
            page.check(f"input[name=_selected_action][value='{c.id}']")
        page.select_option("select[name=action]", "remove_selected")
        page.click("button[name=index]")
        expect(page.locator(".messagelist .success")).to_have_text("Removed 1 container.")
        expect(page.locator(".messagelist .error")).to_contain_text(running.name)
        with pytest.raises(TerrariumError):
            rt.inspect(stopped.id)
        assert rt.inspect(running.id).status == "running"
        page.goto(server + "/admin/containers/container/")          # and it stays gone
        expect(page.locator(f"input[name=_selected_action][value='{stopped.id}']")).to_have_count(0)
        page.goto(server + "/audit/")
        expect(page.locator("body")).to_contain_text(stopped.name)

        # mirrored rows are read-only: no add, edit or delete, whoever asks
        for path, status in (("/admin/containers/image/add/", 403), ("/admin/containers/layer/add/", 403),
                             (f"/admin/containers/container/{stopped.id}/delete/", 403)):
            assert page.goto(server + path).status == status, path
        page.goto(server + "/admin/containers/image/")
        expect(page.locator("#content-main a.addlink")).to_have_count(0)
    finally:
        page.context.close()


def test_admin_mirrors_volumes_read_only_and_removes_through_the_runtime(browser, server, superuser, rt, made,
                                                                         name):
    free, used = f"adm-{secrets.token_hex(3)}", f"adm-{secrets.token_hex(3)}"
    for v in (free, used):
        rt.volumes.create(v)
    user = rt.create(make_spec(image="busybox", name=name, cmd=["true"], mounts=[parse_volume(f"{used}:/data")]))
    page = log_in(browser, server, *superuser)
    try:
        page.goto(server + "/admin/")
        expect(page.locator("a[href='/admin/containers/volume/']").first).to_be_visible()
        page.goto(server + "/admin/containers/volume/")          # read from the runtime on the visit
        row = page.locator("#result_list tr", has_text=used)
        expect(row).to_contain_text(name)                        # "in use by"
        expect(page.locator("#content-main a.addlink")).to_have_count(0)
        expect(page.locator("select[name=action] option")).to_have_text(
            ["---------", "Remove selected volumes (unused ones, through the runtime)"])
        for v in (free, used):
            page.locator("#result_list tr", has_text=v).locator("input[name=_selected_action]").check()
        page.select_option("select[name=action]", "remove_selected")
        page.click("button[name=index]")
        expect(page.locator(".messagelist .success")).to_have_text("Removed 1 volume.")
        expect(page.locator(".messagelist .error")).to_contain_text(
            f"volume '{used}' is in use by container {name!r}: remove the container first")
        assert {v["name"] for v in rt.volumes.list(size=False)} >= {used} and free not in {
            v["name"] for v in rt.volumes.list(size=False)}
        expect(page.locator("#result_list tr", has_text=free)).to_have_count(0)      # the mirror followed
        obj = page.locator("#result_list tr", has_text=used).locator("th a").get_attribute("href")
        assert page.goto(server + obj.replace("/change/", "/delete/")).status == 403     # read-only
        assert page.goto(server + "/admin/containers/volume/add/").status == 403
        page.goto(server + "/audit/")
        expect(page.locator("body")).to_contain_text(free)
    finally:
        page.context.close()
        rt.remove(user.id, force=True)
        for v in (free, used):
            try:
                rt.volumes.remove(v)
            except TerrariumError:
                pass
