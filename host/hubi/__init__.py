"""hubi host tools: KMC, token, merchant, bank node, consortium, audit and benchmarks."""

import os

__version__ = "0.1.0"

# The most pixels an image to scan may have (a 48 MP photo fits). A 440 KB PNG of 20000 x 20000
# white pixels held 5.5 GB and 100 s of CPU before it said "no QR code". OpenCV reads its
# limit once, when cv2 is first imported, so it is set here, before any hubi module imports cv2;
# an operator's own OPENCV_IO_MAX_IMAGE_PIXELS wins.
MAX_IMAGE_PIXELS = 50_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
