"""Headless smart-card-class profile: no screen, no buttons; everything over the link.

The host shows the payment summary, asks for confirmation and the PIN, and shows the note
as QR (hubi token pay). Hardware: any ESP32 module (ESP32-C3/S3 with native USB-CDC, or an
ESP32 with a USB-UART bridge); see hardware/headless.md. The PIN crosses the cable in clear,
as with a contact smart card's VERIFY command.
"""

NAME = "headless"
SETTINGS = {"width": None, "height": None}


def make(config):
    from drivers.esp32 import Esp32Clock, default_storage, usb_link
    from hal import Rng

    from boards import Board, settings_of

    settings = settings_of(NAME, config.get("settings"))
    return Board(NAME, settings, default_storage(), usb_link(), Esp32Clock(), Rng())
