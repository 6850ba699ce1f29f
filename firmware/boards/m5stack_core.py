"""M5Stack Core (Basic/Gray): ESP32 + 2" 320 x 240 ILI9342C + buttons A, B, C. Also fits a
generic ESP32 + 2.8" ILI9341 module wired the same way (hardware/m5stack_core.md).

Pin map:
    TFT  SCK GPIO18, MOSI GPIO23, MISO GPIO19 (unused), CS GPIO14, DC GPIO27, RST GPIO33,
         backlight GPIO32
    keys A GPIO39 = UP, B GPIO38 = OK, C GPIO37 = DOWN (external pull-ups on the board)
    link USB-UART bridge (CP2104/CH9102) on UART0, 115200 baud

Settings: 0.125 mm pixels (2.0"; 0.18 mm on a 2.8" module); a note fits one version-15 QR at 2 px per module (170 px).
"""

NAME = "m5stack_core"
SETTINGS = {"width": 320, "height": 240, "qr_level": "M", "qr_min_px": 2}
PINS = {
    "sck": 18,
    "mosi": 23,
    "miso": 19,
    "cs": 14,
    "dc": 27,
    "rst": 33,
    "bl": 32,
    "up": 39,
    "ok": 38,
    "down": 37,
}


def _buttons():
    from drivers.buttons import Buttons
    from machine import Pin

    return Buttons(Pin(PINS["up"], Pin.IN), Pin(PINS["down"], Pin.IN), Pin(PINS["ok"], Pin.IN))


def maintenance():
    return _buttons().held()


def make(config):
    from drivers.esp32 import Esp32Clock, default_storage, usb_link
    from drivers.panel import Panel
    from hal import Rng
    from machine import SPI, Pin

    from boards import Board, settings_of

    s = settings_of(NAME, config.get("settings"))
    spi = SPI(
        2, baudrate=40000000, sck=Pin(PINS["sck"]), mosi=Pin(PINS["mosi"]), miso=Pin(PINS["miso"])
    )
    display = Panel(
        spi,
        Pin(PINS["dc"], Pin.OUT),
        Pin(PINS["cs"], Pin.OUT, value=1),
        Pin(PINS["rst"], Pin.OUT),
        320,
        240,
        "ili9342",
        bl=Pin(PINS["bl"], Pin.OUT),
    )
    return Board(NAME, s, default_storage(), usb_link(), Esp32Clock(), Rng(), display, _buttons())
