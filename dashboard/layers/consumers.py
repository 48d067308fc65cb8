"""The Images page's Pull and Push forms: websockets that move one image at a
time to or from a registry and stream its per-layer progress (operators only).

    /ws/images/pull/  → {"ref": "localhost:5000/team/app:v1", "platform": ""}
                      ← {"type": "done", "image": "...", "id": "sha256:...", "replaced": ""}
    /ws/images/push/  → {"ref": "busybox", "as": "localhost:5000/team/busybox:v1"}   ("as": optional tag)
                      ← {"type": "done", "image": "localhost:5000/team/busybox:v1", "digest": "sha256:..."}
    both              ← {"type": "progress", "id": "<12 hex>", "status": "Downloading", "current": n, "total": n} ...
                      ← {"type": "error", "error": "..."}

The transfer runs in the runtime (in agent mode, in the root agent, which
reads the registry credentials from the state root: they never reach this
tier).  Bad input gets an error message, never a traceback; the audit log
records who pulled or pushed what and the result.
"""
import asyncio

from channels.db import database_sync_to_async

from dashboard.containers.consumers import ViewerSocket
from dashboard.containers.roles import CAN_OPERATE
from runtime.errors import InvalidArgument, TerrariumError


def _ref(content, key: str, example: str) -> str:
    from runtime.images import reference
    ref = content.get(key) if isinstance(content, dict) else None
    if not isinstance(ref, str) or not ref.strip() or len(ref) > 512:
        raise InvalidArgument(f"give an image reference, e.g. {example}")
    ref = ref.strip()
    reference.parse(ref)
    return ref


class _TransferSocket(ViewerSocket):
    perm = CAN_OPERATE
    verb = ""

    def group_name(self) -> str:
        return f"image-{self.verb}.{self.user_id}"

    async def on_join(self):
        self.busy = False

    def parse(self, content) -> dict:
        """The checked request (InvalidArgument for bad input)."""
        raise NotImplementedError

    def run(self, user, request: dict, progress) -> dict:
        """Do it (a worker thread), audit it; the 'done' message."""
        raise NotImplementedError

    async def receive_json(self, content, **kwargs):
        if self.busy:
            return await self.send_json({"type": "error", "error": f"a {self.verb} is already running on this page"})
        try:
            request = self.parse(content)
        except InvalidArgument as e:
            return await self.send_json({"type": "error", "error": str(e)})
        self.busy = True
        asyncio.get_running_loop().create_task(self._transfer(request))

    async def _transfer(self, request):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        user = self.scope["user"]

        def progress(ev):
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        task = loop.create_task(database_sync_to_async(self.run, thread_sensitive=False)(user, request, progress))
        try:
            while not task.done() or not queue.empty():
                getter = loop.create_task(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    ev = getter.result()
                    if ev.get("status") != "done":
                        await self.send_json({"type": "progress", **ev})
                else:
                    getter.cancel()
            await self.send_json({"type": "done", **task.result()})
        except TerrariumError as e:
            await self.send_json({"type": "error", "error": str(e)})
        finally:
            self.busy = False


def _audited(user, verb: str, ref: str, work, details):
    from dashboard.containers import services
    try:
        result = work()
    except TerrariumError as e:
        services._audit(user, verb, container_name=ref, result="error", message=str(e)[:500])
        raise
    services._audit(user, verb, container_name=ref, result="ok", details=details(result))
    return result


class PullSocket(_TransferSocket):
    verb = "pull"

    def parse(self, content) -> dict:
        from runtime.images.distribution import parse_platform
        ref = _ref(content, "ref", "localhost:5000/team/app:v1")
        platform = content.get("platform") or None
        if platform is not None:
            if not isinstance(platform, str) or len(platform) > 64:
                raise InvalidArgument("invalid platform")
            parse_platform(platform)
        return {"ref": ref, "platform": platform}

    def run(self, user, request, progress) -> dict:
        from dashboard.containers import services
        from dashboard.containers.runtime_client import get_runtime
        ref, platform = request["ref"], request["platform"]
        image = _audited(user, "pull", ref,
                         lambda: get_runtime(user).pull_image(ref, platform=platform, progress=progress),
                         lambda image: {"id": image.id, "replaced": image.replaced, "platform": platform or ""})
        services.images_sync()
        return {"image": image.name, "id": image.id, "replaced": image.replaced}


class PushSocket(_TransferSocket):
    verb = "push"

    def parse(self, content) -> dict:
        from runtime.images import reference
        ref = _ref(content, "ref", "localhost:5000/team/app:v1")
        target = content.get("as") or None
        if target is not None:
            target = _ref(content, "as", "localhost:5000/team/app:v1")
            reference.parse_name(target)          # a name to write: no digest
        return {"ref": ref, "as": target}

    def run(self, user, request, progress) -> dict:
        from dashboard.containers import services
        from dashboard.containers.runtime_client import get_runtime
        rt = get_runtime(user)
        ref = request["ref"]
        if request["as"]:
            target = request["as"]
            _audited(user, "tag", target, lambda: rt.tag_image(ref, target),
                     lambda image: {"source": ref, "id": image.id})
            services.images_sync()
            ref = target
        digest = _audited(user, "push", ref, lambda: rt.push_image(ref, progress=progress),
                          lambda digest: {"digest": digest})
        return {"image": ref, "digest": digest}
