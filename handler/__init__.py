"""The RunPod serverless handler: runs one ComfyUI workflow per job.

A job goes through one module per step (see job.py): validate -> (api, namespace) prepare ->
stage -> prompt_session (submit, follow, stop: the prompt's whole conversation with ComfyUI) ->
collect -> deliver -> cleanup. Everything long-lived (settings, the ComfyUI client, WebSockets,
the S3 client) is built once at start-up in runtime.py; runpod_sdk.py holds every use of the
runpod SDK's private parts.

The modules stay side by side in one package on purpose: the steps, the ComfyUI conversation
and the RunPod boundary are named in docs/handler.md's table ("A job, step by step"), and each
module says which step it is in its first line. Sub-packages would move every module of a
package that other branches of work change at the same time, for no change in what imports what.
"""
