"""The Images page's Pull form: a websocket that pulls one image at a time
and streams its per-layer progress (operators only).

    → {"ref": "localhost:5000/team/app:v1", "platform": ""}
    ← {"type": "progress", "id": "<12 hex>", "status": "Downloading", "current": n, "total": n} ...
    ← {"type": "done", "image": "...", "id": "sha256:...", "replaced": ""} | {"type": "error", "error": "..."}

The pull runs in the runtime (in agent mode, in the root agent, which reads
the registry credentials from the state root: they never reach this tier).
Bad input gets an error message, never a traceback; the audit log records
who pulled what and the result.
"""
import asyncio

from channels.db import database_sync_to_async

from dashboard.containers.consumers import ViewerSocket
from dashboard.containers.roles import CAN_OPERATE
from runtime.errors import InvalidArgument, TerrariumError


class PullSocket(ViewerSocket):
    perm = CAN_OPERATE

    def group_name(self) -> str:
        return f"image-pull.{self.user_id}"

    async def on_join(self):
        self.pulling = False

    async def receive_json(self, content, **kwargs):
        if self.pulling:
            return await self.send_json({"type": "error", "error": "a pull is already running on this page"})
        ref = content.get("ref") if isinstance(content, dict) else None
        platform = (content.get("platform") or None) if isinstance(content, dict) else None
        try:
            from runtime.images import reference
            from runtime.images.distribution import parse_platform
            if not isinstance(ref, str) or not ref.strip() or len(ref) > 512:
                raise InvalidArgument("give an image reference, e.g. localhost:5000/team/app:v1")
            ref = ref.strip()
            reference.parse(ref)
            if platform is not None:
                if not isinstance(platform, str) or len(platform) > 64:
                    raise InvalidArgument("invalid platform")
                parse_platform(platform)
        except InvalidArgument as e:
            return await self.send_json({"type": "error", "error": str(e)})
        self.pulling = True
        asyncio.get_running_loop().create_task(self._pull(ref, platform))

    async def _pull(self, ref, platform):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        user = self.scope["user"]

        def progress(ev):
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        def work():
            from dashboard.containers import services
            from dashboard.containers.runtime_client import get_runtime
            try:
                image = get_runtime(user).pull_image(ref, platform=platform, progress=progress)
            except TerrariumError as e:
                services._audit(user, "pull", container_name=ref, result="error", message=str(e)[:500])
                raise
            services._audit(user, "pull", container_name=ref, result="ok",
                            details={"id": image.id, "replaced": image.replaced, "platform": platform or ""})
            services.images_sync()
            return image

        task = loop.create_task(database_sync_to_async(work, thread_sensitive=False)())
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
            image = task.result()
            await self.send_json({"type": "done", "image": image.name, "id": image.id,
                                  "replaced": image.replaced})
        except TerrariumError as e:
            await self.send_json({"type": "error", "error": str(e)})
        finally:
            self.pulling = False
