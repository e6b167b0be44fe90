"""The XID catalogue: what each NVIDIA XID code means and what to do about it.

Classes follow GPUd's catalogue (shared/gpud/API.md, docs/scoring.md):

- `fatal`: the GPU is in a bad state; reboot and/or hardware inspection.
- `warning`: NVLink-family faults; reboot at a convenient time.
- `application`: raised by the user's program (13, 31, 43, ...), not a hardware fault.
- `no_action`: logged, nothing to do.
- `info`: informational.
- `unknown`: a code not in the catalogue; shown, penalised as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["XID_CATALOGUE", "XidInfo", "classify_xid"]

REBOOT = "REBOOT_SYSTEM"
INSPECT = "HARDWARE_INSPECTION"
CHECK_APP = "CHECK_USER_APP_AND_GPU"
NO_ACTION = "IGNORE_NO_ACTION_REQUIRED"


@dataclass(frozen=True)
class XidInfo:
    code: int
    xid_class: str
    name: str
    repair_actions: tuple[str, ...]
    action: str


_NAMES: dict[int, str] = {
    9: "Driver error programming GPU",
    12: "Driver error handling GPU exception",
    13: "Graphics engine exception (user application fault)",
    16: "Display engine hung",
    18: "Bus mastering disabled in PCI config space",
    19: "Display engine error",
    26: "Framebuffer timeout",
    27: "Video processor exception",
    28: "Video processor exception",
    29: "Video processor exception",
    30: "GPU semaphore access error",
    31: "GPU memory page fault (user application fault)",
    32: "Invalid or corrupted push buffer stream",
    33: "Internal micro-controller error",
    34: "Video processor exception",
    35: "Video processor exception",
    36: "Video processor exception",
    38: "Driver firmware error",
    42: "Video processor exception",
    43: "GPU stopped processing (user application fault)",
    44: "Graphics engine fault during context switch",
    45: "Preemptive cleanup, due to previous errors",
    46: "GPU stopped processing",
    47: "Video processor exception",
    48: "Double bit ECC error (DBE)",
    59: "Internal micro-controller error",
    60: "Video processor exception",
    61: "Internal micro-controller breakpoint/warning",
    62: "Internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapping recording failure",
    65: "Video processor exception",
    68: "NVDEC0 exception",
    69: "Graphics engine class error",
    74: "NVLink error",
    78: "vGPU start failed",
    79: "GPU has fallen off the bus",
    81: "VGA subsystem error",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    110: "Security fault error",
    119: "GSP RPC timeout",
    120: "GSP error",
    121: "C2C link corrected error",
    123: "SPI PMU RPC failure",
    137: "NVLink FLA privilege error (user application fault)",
    140: "Unrecovered ECC error",
    143: "GPU initialization failure",
    144: "NVLink SAW error",
    145: "NVLink RLW error",
    146: "NVLink TLW error",
    147: "NVLink TREX error",
    148: "NVLink NVLPW_CTRL error",
    149: "NVLink NETIR error",
    150: "NVLink MSE error",
    151: "NVLink key error",
    152: "DLA watchdog timeout",
    153: "GPU timeout",
    154: "GPU recovery action changed",
    155: "NVLink SW defined error",
    156: "Resource retirement event",
    157: "Resource retirement failure",
    158: "GPU fatal timeout",
    161: "Recovery action required",
    162: "Fabric manager notification",
    163: "NVLink link error",
    164: "Driver message",
    165: "Driver message",
    166: "NVLink uncorrectable error",
    167: "NVLink PRI error",
    169: "NVLink C2C error",
    170: "Channel error (user application fault)",
    172: "NVLink error",
    173: "NVLink error",
}

_FATAL_REBOOT_INSPECT = (32, 38, 44, 48, 62, 63, 64, 65, 68, 69, 74, 79, 95, 110, 119, 120, 121,
                         123, 140)
_FATAL_REBOOT = (9, 12, 16, 18, 19, 26, 27, 28, 29, 30, 33, 34, 35, 36, 42, 46, 47, 59, 60, 61, 78)
_FATAL_INSPECT = (81, 143)
_WARNING_REBOOT = (144, 145, 146, 147, 148, 149, 150, 151, 155, 156, 158, 163, 166, 167, 169, 172,
                   173)
_APPLICATION = (13, 31, 43, 137, 170)
_NO_ACTION = (45, 92, 94)
_INFO = (152, 153, 157, 161, 162, 164, 165)


def _build() -> dict[int, XidInfo]:
    table: dict[int, XidInfo] = {}

    def add(codes: tuple[int, ...], xid_class: str, actions: tuple[str, ...], action: str) -> None:
        for code in codes:
            table[code] = XidInfo(code, xid_class, _NAMES.get(code, f"XID {code}"), actions, action)

    add(_FATAL_REBOOT_INSPECT, "fatal", (REBOOT, INSPECT),
        "Drain the node, reboot it; if the XID returns, send the GPU for hardware inspection")
    add(_FATAL_REBOOT, "fatal", (REBOOT,), "Drain the node and reboot it")
    add(_FATAL_INSPECT, "fatal", (INSPECT,), "Drain the node and send the GPU for hardware inspection")
    add(_WARNING_REBOOT, "warning", (REBOOT,), "NVLink fault: reboot the node when jobs allow")
    add(_APPLICATION, "application", (CHECK_APP,),
        "Application fault, not hardware: check the user's program; act only if it repeats")
    add(_NO_ACTION, "no_action", (NO_ACTION,), "No action required")
    add(_INFO, "info", (NO_ACTION,), "Informational; no action required")
    # 79 needs a power cycle, not just a reboot.
    table[79] = XidInfo(79, "fatal", _NAMES[79], (REBOOT, INSPECT),
                        "GPU fell off the bus: power-cycle the node; if it repeats, RMA the GPU")
    # 94 is "fatal" in GPUd's table but contained: the application is killed, the GPU survives.
    table[94] = XidInfo(94, "no_action", _NAMES[94], (NO_ACTION,),
                        "Contained ECC error: the affected application was stopped; watch for repeats")
    return table


XID_CATALOGUE: dict[int, XidInfo] = _build()


def classify_xid(code: int) -> XidInfo:
    """The catalogue entry for `code`; unknown codes get class `unknown`."""
    info = XID_CATALOGUE.get(code)
    if info is not None:
        return info
    return XidInfo(code, "unknown", f"XID {code} (not in the catalogue)", (),
                   "Look the XID up in NVIDIA's XID catalogue; watch for repeats")
