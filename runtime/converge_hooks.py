"""The hooks of a converge pass: tc/XDP attachments on devices, the cgroup links.

Every (device, hook) the build names runs its program: after a load, each target
moves to the new program (BPF_TC_F_REPLACE, XDP replace, bpf_link_update for a
cgroup link); otherwise a target running the live program of this build is left
alone. What the state file lists and the build no longer wants is detached.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING

from . import attach
from .builddir import Build
from .mode_ipvs import DUMMY_DEVICE
from .state import Attachment, CgroupLink

if TYPE_CHECKING:
    from .converge import Converge


def desired_targets(build: Build, present: dict[str, int]) -> dict[tuple[str, str], str]:
    """(device, hook) -> program name, globs expanded against `present` (not cgroup hooks)."""
    out: dict[tuple[str, str], str] = {}
    for prog in build.programs:
        for a in prog.attach:
            if a.is_cgroup:
                continue
            for dev in attach.expand(a.interface, present, (DUMMY_DEVICE,)):
                out[(dev, a.hook)] = prog.name
    return out


def desired_links(build: Build, cgroup: str | None) -> dict[str, tuple[str, str]]:
    """cgroup hook -> (program name, cgroup directory): the build's, or `cgroup` instead."""
    return {
        a.hook: (prog.name, cgroup or a.interface)
        for prog in build.programs
        for a in prog.attach
        if a.is_cgroup
    }


class Hooks:
    """The attachments and cgroup links of a `Converge` pass."""

    def __init__(self, c: Converge) -> None:
        self.c = c

    def attachments(self) -> None:
        present = attach.devices()
        targets = desired_targets(self.c.build, present)
        seen: set[str] = set()
        with ExitStack() as closer:
            for (dev, hook), prog_name in sorted(targets.items()):
                ifindex = present[dev]
                if hook != "xdp" and dev not in seen:
                    seen.add(dev)

                    def clsact(dev: str = dev, ifindex: int = ifindex) -> None:
                        ours = dev in self.c.state.clsact_created
                        self.c.state.clsact_created[dev] = ifindex  # intent first: no leak
                        self.c.save()
                        if not attach.ensure_clsact(ifindex, dev) and not ours:
                            del self.c.state.clsact_created[dev]  # appeared meanwhile: not ours

                    # live, not recorded: a qdisc deleted by hand (its filters went with
                    # it) or a namespace made again under the same name is repaired
                    if not attach.has_clsact(ifindex):
                        self.c.change(f"add clsact qdisc on {dev}", clsact)
                recorded = self._attachment(dev, hook)
                mode = recorded.xdp_mode if recorded else None
                live_id = attach.query(hook, ifindex, xdp_mode=mode)
                # After a load every target moves to the new programs; otherwise a
                # target is right when it runs the live program of this build.
                want_id = None if self.c.loaded else self.c.current_program(prog_name)
                if want_id is not None and live_id == want_id and recorded is not None:
                    continue

                def do_attach(dev: str = dev, hook: str = hook, prog_name: str = prog_name,
                              ifindex: int = ifindex) -> None:  # fmt: skip
                    fd = self.c.program_fd(prog_name, closer)
                    old = self._attachment(dev, hook)
                    prog_id, mode = attach.attach(
                        attach.Target(prog_name, dev, hook), ifindex, fd,
                        xdp_mode=old.xdp_mode if old else None,
                    )  # fmt: skip
                    state = self.c.state
                    state.attachments = [
                        a for a in state.attachments if (a.device, a.hook) != (dev, hook)
                    ]
                    self.c.state.attachments.append(
                        Attachment(program=prog_name, device=dev, ifindex=ifindex, hook=hook,
                                   prog_id=prog_id, xdp_mode=mode)
                    )  # fmt: skip

                verb = "replace" if live_id is not None else "attach"
                self.c.change(f"{verb} {prog_name} on {hook} of {dev}", do_attach)
            for a in list(self.c.state.attachments):
                if (a.device, a.hook) in targets:
                    continue

                def drop(a: Attachment = a) -> None:
                    if present.get(a.device) == a.ifindex:
                        attach.detach(a.hook, a.ifindex, a.device, xdp_mode=a.xdp_mode)
                    self.c.state.attachments.remove(a)

                self.c.change(f"detach {a.program} from {a.hook} of {a.device}", drop)

    def cgroup_links(self) -> None:
        """The bpf mode's cgroup hooks: a pinned link each. A link on the wanted cgroup
        gets the new program in place (bpf_link_update, atomic) after a load; one on
        another cgroup, or of a hook the build no longer has, is detached after the new
        ones are attached."""
        wanted = desired_links(self.c.build, self.c.opts.cgroup)
        with ExitStack() as closer:
            for hook, (prog_name, cgroup) in sorted(wanted.items()):
                pin = attach.link_pin(self.c.opts.pin_dir(), hook)
                recorded = next((x for x in self.c.state.links if x.hook == hook), None)
                same = recorded is not None and recorded.cgroup == cgroup
                live_id = attach.query_cgroup(pin) if same else None
                want_id = None if self.c.loaded else self.c.current_program(prog_name)
                if want_id is not None and live_id == want_id:
                    continue

                def do_link(
                    hook: str = hook,
                    prog_name: str = prog_name,
                    cgroup: str = cgroup,
                    pin: str = pin,
                    update: bool = live_id is not None,
                ) -> None:
                    fd = self.c.program_fd(prog_name, closer)
                    if update:
                        prog_id = attach.update_cgroup(prog_name, hook, pin, fd)
                    else:
                        for x in [x for x in self.c.state.links if x.hook == hook]:
                            attach.detach_cgroup(hook, x.pin)  # on another cgroup
                            self.c.state.links.remove(x)
                        attach.detach_cgroup(hook, pin)  # a pin a crash left unrecorded
                        # recorded before it exists: `down` finds it whatever happens next
                        self.c.state.links.append(
                            CgroupLink(program=prog_name, hook=hook, cgroup=cgroup, pin=pin,
                                       prog_id=0)
                        )  # fmt: skip
                        self.c.save()
                        prog_id = attach.attach_cgroup(prog_name, hook, cgroup, fd, pin)
                    self.c.state.links[:] = [
                        replace(x, program=prog_name, prog_id=prog_id) if x.hook == hook else x
                        for x in self.c.state.links
                    ]

                verb = "replace" if live_id is not None else "attach"
                self.c.change(f"{verb} {prog_name} on {hook} of cgroup {cgroup}", do_link)
        for x in list(self.c.state.links):
            if x.hook in wanted:
                continue

            def drop(x: CgroupLink = x) -> None:
                attach.detach_cgroup(x.hook, x.pin)
                self.c.state.links.remove(x)

            self.c.change(f"detach {x.program} from {x.hook} of cgroup {x.cgroup}", drop)

    def _attachment(self, dev: str, hook: str) -> Attachment | None:
        return next(
            (a for a in self.c.state.attachments if (a.device, a.hook) == (dev, hook)), None
        )
