# The stand-in's comfy/cli_args.py for ComfyUI 0.38.1: the flags of Comfy-Org/ComfyUI
# comfy/cli_args.py 03294572, in ComfyUI's layout (module-level add_argument calls, groups in
# variables, parse at import when comfy.options.args_parsing is on, then the fix-ups). Written
# for the stand-in; the launcher reads it as it reads a real install's (without running it).
import argparse

import comfy.options
from standin_server.cli import EnumAction, LatentPreviewMethod, PerformanceFeature, VerboseAction, is_valid_directory

parser = argparse.ArgumentParser()

parser.add_argument("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--tls-keyfile", type=str)
parser.add_argument("--tls-certfile", type=str)
parser.add_argument("--enable-cors-header", type=str, default=None, metavar="ORIGIN", nargs="?", const="*")
parser.add_argument("--max-upload-size", type=float, default=100)

parser.add_argument("--base-directory", type=str, default=None)
parser.add_argument("--extra-model-paths-config", type=str, default=None, metavar="PATH", nargs="+", action="append")
parser.add_argument("--output-directory", type=str, default=None)
parser.add_argument("--date-based-output", action="store_true")
parser.add_argument("--date-output-format", type=str, default="%Y-%m-%d")
parser.add_argument("--temp-directory", type=str, default=None)
parser.add_argument("--input-directory", type=str, default=None)
parser.add_argument("--auto-launch", action="store_true")
parser.add_argument("--disable-auto-launch", action="store_true")
parser.add_argument("--cuda-device", type=str, default=None, metavar="DEVICE_ID")
parser.add_argument("--default-device", type=int, default=None, metavar="DEFAULT_DEVICE_ID")
cm_group = parser.add_mutually_exclusive_group()
cm_group.add_argument("--cuda-malloc", action="store_true")
cm_group.add_argument("--disable-cuda-malloc", action="store_true")

fp_group = parser.add_mutually_exclusive_group()
fp_group.add_argument("--force-fp32", action="store_true")
fp_group.add_argument("--force-fp16", action="store_true")

fpunet_group = parser.add_mutually_exclusive_group()
fpunet_group.add_argument("--fp32-unet", action="store_true")
fpunet_group.add_argument("--fp64-unet", action="store_true")
fpunet_group.add_argument("--bf16-unet", action="store_true")
fpunet_group.add_argument("--fp16-unet", action="store_true")
fpunet_group.add_argument("--fp8_e4m3fn-unet", action="store_true")
fpunet_group.add_argument("--fp8_e5m2-unet", action="store_true")
fpunet_group.add_argument("--fp8_e8m0fnu-unet", action="store_true")

fpvae_group = parser.add_mutually_exclusive_group()
fpvae_group.add_argument("--fp16-vae", action="store_true")
fpvae_group.add_argument("--fp32-vae", action="store_true")
fpvae_group.add_argument("--bf16-vae", action="store_true")

parser.add_argument("--cpu-vae", action="store_true")

fpte_group = parser.add_mutually_exclusive_group()
fpte_group.add_argument("--fp8_e4m3fn-text-enc", action="store_true")
fpte_group.add_argument("--fp8_e5m2-text-enc", action="store_true")
fpte_group.add_argument("--fp16-text-enc", action="store_true")
fpte_group.add_argument("--fp32-text-enc", action="store_true")
fpte_group.add_argument("--bf16-text-enc", action="store_true")

parser.add_argument("--fp16-intermediates", action="store_true")
parser.add_argument("--force-channels-last", action="store_true")
parser.add_argument("--directml", type=int, nargs="?", metavar="DIRECTML_DEVICE", const=-1)
parser.add_argument("--oneapi-device-selector", type=str, default=None, metavar="SELECTOR_STRING")
parser.add_argument("--supports-fp8-compute", action="store_true")
parser.add_argument("--enable-triton-backend", action="store_true")
parser.add_argument("--disable-triton-backend", action="store_true")

parser.add_argument(
    "--preview-method", type=LatentPreviewMethod, default=LatentPreviewMethod.NoPreviews, action=EnumAction
)
parser.add_argument("--preview-size", type=int, default=512)

cache_group = parser.add_mutually_exclusive_group()
cache_group.add_argument("--cache-ram", nargs="*", type=float, default=[], metavar="GB")
cache_group.add_argument("--cache-classic", action="store_true")
cache_group.add_argument("--cache-lru", type=int, default=0)
cache_group.add_argument("--cache-none", action="store_true")
cache_group.add_argument("--high-ram", action="store_true")

attn_group = parser.add_mutually_exclusive_group()
attn_group.add_argument("--use-split-cross-attention", action="store_true")
attn_group.add_argument("--use-quad-cross-attention", action="store_true")
attn_group.add_argument("--use-pytorch-cross-attention", action="store_true")
attn_group.add_argument("--use-sage-attention", action="store_true")
attn_group.add_argument("--use-flash-attention", action="store_true")
attn_group.add_argument("--use-ck-attention", action="store_true")

parser.add_argument("--disable-xformers", action="store_true")

upcast = parser.add_mutually_exclusive_group()
upcast.add_argument("--force-upcast-attention", action="store_true")
upcast.add_argument("--dont-upcast-attention", action="store_true")

parser.add_argument("--enable-manager", action="store_true")
manager_group = parser.add_mutually_exclusive_group()
manager_group.add_argument("--disable-manager-ui", action="store_true")
manager_group.add_argument("--enable-manager-legacy-ui", action="store_true")

vram_group = parser.add_mutually_exclusive_group()
vram_group.add_argument("--gpu-only", action="store_true")
vram_group.add_argument("--highvram", action="store_true")
vram_group.add_argument("--lowvram", action="store_true")
vram_group.add_argument("--novram", action="store_true")
vram_group.add_argument("--cpu", action="store_true")

parser.add_argument("--reserve-vram", type=float, default=None)
parser.add_argument("--vram-headroom", type=float, default=0)
parser.add_argument("--disable-nvml-pressure", action="store_true")
parser.add_argument("--async-offload", nargs="?", const=2, type=int, default=None, metavar="NUM_STREAMS")
parser.add_argument("--disable-async-offload", action="store_true")
parser.add_argument("--disable-dynamic-vram", action="store_true")
parser.add_argument("--enable-dynamic-vram", action="store_true")
parser.add_argument("--fast-disk", action="store_true")
parser.add_argument("--disable-fast-disk", action="store_true")
parser.add_argument("--disable-cuda-graphs", action="store_true")
parser.add_argument("--disable-comfy-compiler", action="store_true")
parser.add_argument("--assert-graph-breaks", action="store_true")
parser.add_argument("--force-non-blocking", action="store_true")
parser.add_argument(
    "--default-hashing-function", type=str, choices=["md5", "sha1", "sha256", "sha512"], default="sha256"
)
parser.add_argument("--disable-smart-memory", action="store_true")
parser.add_argument("--deterministic", action="store_true")
parser.add_argument("--fast", nargs="*", type=PerformanceFeature)
parser.add_argument("--debug-hang", action="store_true")
parser.add_argument("--disable-pinned-memory", action="store_true")
parser.add_argument("--mmap-torch-files", action="store_true")
parser.add_argument("--disable-mmap", action="store_true")
parser.add_argument("--dont-print-server", action="store_true")
parser.add_argument("--quick-test-for-ci", action="store_true")
parser.add_argument("--windows-standalone-build", action="store_true")
parser.add_argument("--disable-metadata", action="store_true")
parser.add_argument("--disable-all-custom-nodes", action="store_true")
parser.add_argument("--whitelist-custom-nodes", type=str, nargs="+", default=[])
parser.add_argument("--disabled-nodes-config", type=str, default=None, metavar="PATH")
parser.add_argument("--disable-partner-nodes", action="store_true")
parser.add_argument("--offline", action="store_true")
parser.add_argument("--disable-api-nodes", action="store_true")
parser.add_argument("--multi-user", action="store_true")
parser.add_argument("--verbose", action=VerboseAction, nargs="*", default=[], metavar="LEVEL FILE")
parser.add_argument("--log-stdout", action="store_true")
parser.add_argument("--front-end-version", type=str, default="comfyanonymous/ComfyUI@latest")
parser.add_argument("--front-end-root", type=is_valid_directory, default=None)
parser.add_argument("--user-directory", type=is_valid_directory, default=None)
parser.add_argument("--models-directory", type=is_valid_directory, default=None)
parser.add_argument("--enable-compress-response-body", action="store_true")
parser.add_argument("--comfy-api-base", type=str, default="https://api.comfy.org")
parser.add_argument("--database-url", type=str, default=None)
parser.add_argument("--disable-assets", action="store_true")
parser.add_argument("--enable-assets", action="store_true")
parser.add_argument("--enable-asset-hashing", action="store_true")
parser.add_argument("--feature-flag", type=str, action="append", default=[], metavar="KEY[=VALUE]")
parser.add_argument("--list-feature-flags", action="store_true")

args = parser.parse_args() if comfy.options.args_parsing else parser.parse_args([])

if args.cache_ram is not None and len(args.cache_ram) > 2:
    parser.error("--cache-ram accepts at most two values: active GB and inactive GB")
if args.high_ram:
    args.cache_classic = True
if args.disable_api_nodes:
    args.offline = True
if args.offline:
    args.disable_partner_nodes = True
