# As ComfyUI's comfy/options.py: main.py turns argument parsing on before it imports comfy.cli_args;
# anything else that imports it (a test, a tool) gets the defaults.
args_parsing = False


def enable_args_parsing(enable=True):
    global args_parsing
    args_parsing = enable
