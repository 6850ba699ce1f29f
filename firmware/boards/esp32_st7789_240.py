"""ESP32 DevKitC + 1.3" 240 x 240 ST7789 IPS module (SPI, no CS pin) + three buttons.

Pin map (hardware/esp32_st7789_240.md has the wiring table and bill of materials):
    TFT  SCK GPIO18, MOSI GPIO23 (SPI id 2 = VSPI), DC GPIO2, RES GPIO4, BLK GPIO15
    keys UP GPIO32, DOWN GPIO33, OK GPIO25 (to GND, internal pull-ups)
    link USB-UART bridge on UART0 (the REPL port), 115200 baud

Settings: 1.3" at 240 px has 0.1 mm pixels; a 2-px module (0.2 mm) is hard for phone cameras,
so notes are shown at >= 3 px per module: as an animated loop of version <= 7 frames.
"""

NAME = "esp32_st7789_240"
SETTINGS = {"width": 240, "height": 240, "qr_level": "M", "qr_min_px": 3}
PINS = {"sck": 18, "mosi": 23, "dc": 2, "rst": 4, "bl": 15, "up": 32, "down": 33, "ok": 25}


def _buttons():
    from drivers.buttons import Buttons
    from machine import Pin

    pull = Pin.PULL_UP
    return Buttons(
        Pin(PINS["up"], Pin.IN, pull),
        Pin(PINS["down"], Pin.IN, pull),
        Pin(PINS["ok"], Pin.IN, pull),
    )


def maintenance():
    """OK held at power-on: leave the REPL free (redeploy with mpremote)."""
    return _buttons().held()


def make(config):
    from drivers.esp32 import Esp32Clock, default_storage, usb_link
    from drivers.panel import Panel
    from hal import Rng
    from machine import SPI, Pin

    from boards import Board, settings_of

    s = settings_of(NAME, config.get("settings"))
    spi = SPI(
        2, baudrate=40000000, polarity=1, phase=1, sck=Pin(PINS["sck"]), mosi=Pin(PINS["mosi"])
    )
    display = Panel(
        spi,
        Pin(PINS["dc"], Pin.OUT),
        None,
        Pin(PINS["rst"], Pin.OUT),
        240,
        240,
        "st7789",
        bl=Pin(PINS["bl"], Pin.OUT),
    )
    return Board(NAME, s, default_storage(), usb_link(), Esp32Clock(), Rng(), display, _buttons())
