"""hubi token firmware entry point: pick the board, wire HAL drivers, core and UI, and run.

    micropython main.py CONFIG.json      the simulator (hubi token sim writes CONFIG.json)
    main.py on a board                   reads /board.json ({"board": "m5stack_core", ...})
                                         written by `hubi token deploy`

Nothing below imports a driver except through boards.load(): core never sees hardware.
"""

import gc
import sys


def _mount_rom():
    """Simulator: mount the ROMFS image the launcher mapped outside the heap (hubi.token.romrun),
    as MicroPython mounts a board's ROMFS partition at /rom."""
    import os

    spec = os.getenv("HUBI_ROMFS") if hasattr(os, "getenv") else None
    if not spec:
        return
    import uctypes
    import vfs

    addr, n = spec.split(":")
    vfs.mount(vfs.VfsRom(memoryview(uctypes.bytearray_at(int(addr), int(n)))), "/rom")
    sys.path[:0] = ["/rom", "/rom/lib"]


def _config(argv):
    import json

    if len(argv) > 1:
        with open(argv[1]) as f:
            cfg = json.load(f)
        cfg.setdefault("board", "sim")
        return cfg
    try:
        with open("/board.json") as f:
            return json.load(f)
    except OSError:
        return {"board": "headless"}


def build(cfg):
    """Board, wallet, link server, UI and the Token app from a config dict."""
    import boards
    from core.keystore import Keystore
    from core.token import Token
    from core.wallet import Wallet

    from hubi_core.link import Server

    board = boards.load(cfg.get("board", "sim"), cfg)
    s = board.settings
    ks = Keystore(board.storage, board.rng, board.clock, s["kdf_iterations"], s["pin_backoff_ms"])
    wallet = Wallet(board.storage, ks, board.clock, s)
    wallet.boot()
    server = Server(board.transport, name="hubi-token " + board.name, max_message=s["max_message"])
    ui = None
    if board.display is not None:
        from ui.screens import Ui

        ui = Ui(board.display, board.input, board.clock, s)
    gc.collect()
    return Token(wallet, server, ui, board.clock, board.name, board.log)


def main(argv=None):
    _mount_rom()
    cfg = _config(sys.argv if argv is None else argv)
    if cfg.get("maintenance_check", True) and cfg.get("board") not in ("sim", None):
        import boards

        mod = boards.module(cfg["board"])
        if getattr(mod, "maintenance", None) and mod.maintenance():
            print("hubi: maintenance mode (button held at boot): REPL left free")
            return None
    token = build(cfg)
    token.log("ready:", token.board, "provisioned" if token.wallet.provisioned else "blank")
    token.run()


def _run():
    try:
        main()
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # noqa: BLE001 - report on stderr: stdout may be the link
        sys.print_exception(e, sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    _run()
