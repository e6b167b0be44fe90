"""The slice of GPUd's XID catalogue the simulator emits (names and event types as GPUd has them).

Kept separate from flow's own XID table on purpose: the simulator speaks for GPUd, so it must
not borrow the client side's interpretation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["XID_CATALOG", "XidEntry", "xid_reason"]


@dataclass(frozen=True)
class XidEntry:
    name: str                         # GPUd's Detail.Name
    event_type: str                   # "Fatal" | "Critical" | "Warning" | "Info"
    repair_actions: tuple[str, ...]   # SuggestedActionsByGPUd.RepairActions
    mnemonic: str                     # the v0.9+ reason header


XID_CATALOG: dict[int, XidEntry] = {
    13: XidEntry("Graphics Engine Exception", "Warning", ("CHECK_USER_APP_AND_GPU",),
                 "ROBUST_CHANNEL_GR_EXCEPTION"),
    31: XidEntry("GPU memory page fault", "Warning", ("CHECK_USER_APP_AND_GPU",),
                 "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT"),
    48: XidEntry("Double Bit ECC Error", "Fatal", ("REBOOT_SYSTEM", "HARDWARE_INSPECTION"),
                 "ROBUST_CHANNEL_ECC_DBE"),
    63: XidEntry("ECC page retirement or row remapping recording event", "Fatal",
                 ("REBOOT_SYSTEM", "HARDWARE_INSPECTION"), "ROBUST_CHANNEL_ROW_REMAP_EVENT"),
    74: XidEntry("NVLINK Error", "Fatal", ("REBOOT_SYSTEM", "HARDWARE_INSPECTION"),
                 "ROBUST_CHANNEL_NVLINK_ERROR"),
    79: XidEntry("GPU has fallen off the bus", "Fatal", ("REBOOT_SYSTEM", "HARDWARE_INSPECTION"),
                 "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"),
    94: XidEntry("Contained ECC error", "Fatal", ("REBOOT_SYSTEM",), "ROBUST_CHANNEL_CONTAINED_ERROR"),
    95: XidEntry("Uncontained ECC error", "Fatal", ("REBOOT_SYSTEM", "HARDWARE_INSPECTION"),
                 "ROBUST_CHANNEL_UNCONTAINED_ERROR"),
}


def xid_reason(xid: int, kmsg_device: str, gpu_uuid: str | None, *, legacy: bool = False) -> str:
    """GPUd's reason/message text for an XID.

    v0.5.x: `XID 79 (GPU has fallen off the bus) detected on GPU PCI:0000:18:00 UUID:GPU-…`.
    v0.4.x (`legacy`): `XID 79(GPU has fallen off the bus) detected on PCI:0000:18:00`.
    """
    entry = XID_CATALOG.get(xid)
    if legacy:
        return f"XID {xid}({entry.name}) detected on {kmsg_device}" if entry else \
            f"XID {xid} detected on {kmsg_device}"
    suffix = f"GPU {kmsg_device} UUID:{gpu_uuid}" if gpu_uuid else f"GPU {kmsg_device}"
    if entry:
        return f"XID {xid} ({entry.name}) detected on {suffix}"
    return f"XID {xid} detected on {suffix}"
