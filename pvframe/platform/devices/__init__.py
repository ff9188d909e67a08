"""PC platform devices: each module models one chip and cites its datasheet or spec."""

from pvframe.platform.devices.apic import LocalApic
from pvframe.platform.devices.cmos import CmosRtc
from pvframe.platform.devices.debug_exit import DebugExit
from pvframe.platform.devices.fw_cfg import FwCfg
from pvframe.platform.devices.pic import PICPair
from pvframe.platform.devices.pit import Pit8254
from pvframe.platform.devices.port80 import Port80
from pvframe.platform.devices.router import InterruptRouter
from pvframe.platform.devices.uart import Uart16550

__all__ = [
    "CmosRtc",
    "DebugExit",
    "FwCfg",
    "InterruptRouter",
    "LocalApic",
    "PICPair",
    "Pit8254",
    "Port80",
    "Uart16550",
]
