"""The RunPod serverless handler: runs one ComfyUI workflow per job.

A job goes through one module per step (see job.py): validate -> stage -> submit ->
follow -> collect -> deliver -> cleanup. Everything long-lived (settings, the ComfyUI
client, WebSockets, the S3 client) is built once at start-up in runtime.py.
"""
