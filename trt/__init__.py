"""trt room."""
