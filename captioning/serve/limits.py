"""What one request and one batch may hold (``captioning serve``'s limits options)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    max_files: int = 16  # photos in one request
    max_upload_mb: float = 20.0  # bytes in one request
    batch_window_ms: float = 10.0  # how long the worker waits for more photos to batch
    max_batch: int = 32  # photos in one encoder call and search
