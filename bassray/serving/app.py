"""Ray Serve application: a FastAPI ingress in front of a batched bass generator.

    bassray serve models:/bassray-diffusion/3                            # from the MLflow registry
    serve run bassray.serving.app:build_app bundle=/path/to/diffusion-bundle      # local, http://127.0.0.1:8000
    serve run serve/config.yaml                                          # the same, from the deploy config
    serve deploy serve/config.yaml                                       # on a running cluster
    curl -F mix=@song.wav -F steps=32 -F seed=1 http://127.0.0.1:8000/generate -o bass.wav

The ingress here checks and decodes uploads and forwards them to the batched generator deployment
(bassray/serving/generator.py); every replica reports to the stats board (bassray/serving/stats.py).

No ``from __future__ import annotations`` here: FastAPI must see real types (``Request``) on the
routes after Serve re-wraps them.
"""

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from bassray.remote import is_uri
from bassray.bundles.files import BundleError
from bassray.bundles.store import default_cache_dir, open_remote_bundle
from bassray.serving.access import ANONYMOUS, API_KEYS_FILE_ENV, KeyRing, RateLimiter, load_api_keys
from bassray.serving.body import parse_form, read_body
from bassray.serving.registry import is_model_uri, resolve_model_uri
from bassray.serving.openapi import GENERATE_OPENAPI, GENERATE_RESPONSES, READ_RESPONSES, install_openapi
from bassray.serving.generator import BassGeneratorDeployment
from bassray.serving.stats import ServeMetrics, StatsBoard, process_memory_mb, report_stats
from bassray.serving.validation import (GenerateParams, Limits, RequestError, check_uploaded_size, decode_upload,
                                        parse_params, safe_name, to_input_format, wav_and_midi_zip, wav_bytes)

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
app = FastAPI(title="bassray", description="Generate a bass stem for a music mix (latent diffusion).")


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status, headers=headers)


@serve.deployment(name="BassrayIngress", max_ongoing_requests=32, max_queued_requests=64,
                  backpressure_config=BackpressureConfig(status_code=429, retry_after_s=1),
                  ray_actor_options={"num_cpus": 0.25})
@serve.ingress(app)
class BassrayIngress:
    """HTTP: checks and decodes uploads, converts audio formats, forwards to the generator."""

    def __init__(self, generator: DeploymentHandle, stats: DeploymentHandle | None = None,
                 max_upload_mb: float = 50.0, max_seconds: float = 600.0, stall_timeout_s: float = 30.0,
                 generation_timeout_s: float = 300.0, api_keys: list[str] | None = None,
                 api_keys_file: str | None = None, rate_limit_per_minute: int | None = None):
        self.generator, self.board = generator, stats
        self.limits = Limits(max_upload_bytes=int(max_upload_mb * 1e6), max_seconds=max_seconds,
                             stall_timeout_s=stall_timeout_s, generation_timeout_s=generation_timeout_s)
        self.keyring = KeyRing(load_api_keys(api_keys, api_keys_file))
        self.rate_limiter = RateLimiter(rate_limit_per_minute)
        self.metrics = ServeMetrics("ingress")
        install_openapi(app, keys_required=self.keyring.enabled)
        self._model_info: dict[str, Any] | None = None

    async def model_info(self) -> dict[str, Any]:
        if self._model_info is None:
            self._model_info = await self.generator.info.remote()
        return self._model_info

    def _caller(self, request: Request) -> str:
        return self.keyring.identify(request.headers.get("authorization"),
                                     request.client.host if request.client else None)

    @app.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", responses=READ_RESPONSES)
    async def info(self, request: Request) -> Any:
        try:
            self._caller(request)
        except RequestError as exc:
            return _error(exc.status, exc.reason, exc.headers)
        model = await self.model_info()
        return {"model": model, "limits": self.limits.as_dict(), "defaults": model["sampler_defaults"],
                "auth": "api key" if self.keyring.enabled else "none (this machine only)",
                "rate_limit_per_minute": self.rate_limiter.per_minute}

    @app.get("/stats", responses=READ_RESPONSES)
    async def stats(self, request: Request) -> Any:
        """Every replica's figures and their totals: requests by status and key, batch sizes,
        queue length, latency percentiles, memory."""
        try:
            self._caller(request)
        except RequestError as exc:
            return _error(exc.status, exc.reason, exc.headers)
        if self.board is None:
            return _error(503, "this app was built without a stats board")
        return await self.board.summary.remote()

    @app.post("/generate", response_class=Response, responses=GENERATE_RESPONSES, openapi_extra=GENERATE_OPENAPI)
    async def generate(self, request: Request) -> Response:
        """multipart/form-data: ``mix`` (file), optional ``style`` (file), steps, cfg, rescale, seed,
        with_mix. Returns a WAV at the mix's rate, channel count and exact length."""
        started, caller = time.perf_counter(), ANONYMOUS
        try:
            caller = self._caller(request)
            self.rate_limiter.admit(caller)
            response = await self._handle(request)
        except RequestError as exc:
            response = _error(exc.status, exc.reason, exc.headers)
        except Exception as exc:  # a bug of ours: still a JSON reason, and counted
            log.exception("unexpected error in /generate")
            response = _error(500, f"internal error: {type(exc).__name__}: {str(exc)[:300]}")
        seconds = time.perf_counter() - started
        self.metrics.request(response.status_code, caller, seconds)
        if self.board is not None:
            await report_stats(self.board.record_request.remote(
                serve.get_replica_context().replica_id.unique_id, response.status_code, caller, seconds,
                process_memory_mb()))
        return response

    async def _handle(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.limits)
        except RequestError as exc:  # the rest of the body is never read: close the connection
            exc.headers.setdefault("Connection", "close")
            raise
        form = await parse_form(request, body)
        del body
        uploads = {name: form.get(name) for name in ("mix", "style")}
        if not isinstance(uploads["mix"], UploadFile):
            raise RequestError(422, "no mix file: send it as the multipart/form-data file field `mix` "
                                    "(curl -F mix=@song.wav ...)")
        if uploads["style"] is not None and not isinstance(uploads["style"], UploadFile):
            if str(uploads["style"]).strip():
                raise RequestError(422, "style must be a file (multipart file field `style`)")
            uploads["style"] = None
        data = {name: await f.read() for name, f in uploads.items() if isinstance(f, UploadFile)}
        if "style" in data and not data["style"] and not uploads["style"].filename:
            del data["style"]  # an untouched browser file input sends an empty, unnamed part
        check_uploaded_size(sum(len(d) for d in data.values()), self.limits)
        model = await self.model_info()
        params = parse_params(form, model["sampler_defaults"])
        mix, rate = await run_in_threadpool(decode_upload, data["mix"], "mix", self.limits)
        style, style_rate = None, rate
        if "style" in data:
            style, style_rate = await run_in_threadpool(decode_upload, data["style"], "style", self.limits)
        bass = await self._generate(mix, rate, style, style_rate, params, model)
        name = f'{safe_name(uploads["mix"].filename)}-{"mix+bass" if params.with_mix else "bass"}'
        audio = await run_in_threadpool(wav_bytes, mix + bass if params.with_mix else bass, rate)
        headers = {"X-Bassray-Seed": str(params.seed), "X-Bassray-Steps": str(params.steps),
                   "X-Bassray-Sampler": params.sampler, "X-Bassray-Harmony": f"{params.harmony:g}",
                   "X-Bassray-Sample-Rate": str(rate)}
        if params.midi:  # WAV + the bass line's notes (from the bass alone, on the mix's beats), zipped
            body = await run_in_threadpool(wav_and_midi_zip, name, audio, bass, rate, mix)
            return Response(body, media_type="application/zip",
                            headers={**headers, "Content-Disposition": f'attachment; filename="{name}.zip"'})
        return Response(audio, media_type="audio/wav",
                        headers={**headers, "Content-Disposition": f'attachment; filename="{name}.wav"'})

    async def _generate(self, mix: np.ndarray, rate: int, style: np.ndarray | None, style_rate: int,
                        params: GenerateParams, model: dict[str, Any]) -> np.ndarray:
        """The bass at the input's rate, channel count and length."""
        from bassray.audio import conform
        from bassray.inference import GenerationSettings
        model_rate, model_channels = model["sample_rate"], model["channels"]
        model_mix = await run_in_threadpool(conform, mix, rate, model_rate, model_channels)
        model_style = None
        if style is not None:
            model_style = await run_in_threadpool(conform, style, style_rate, model_rate, model_channels)
        settings = GenerationSettings(steps=params.steps, cfg_weight=params.cfg_weight,
                                      rescale_phi=params.rescale_phi, seed=params.seed, style_audio=model_style,
                                      sampler=params.sampler, harmony=params.harmony,
                                      temperature=params.temperature)
        pending = self.generator.generate.remote(model_mix, settings)
        timeout = self.limits.generation_timeout_s
        try:
            bass = await asyncio.wait_for(pending, timeout=timeout)
        except asyncio.TimeoutError:
            pending.cancel()  # the replica drops it from its batch queue; its other requests go on
            raise RequestError(504, f"generation took longer than this server's limit of {timeout:g} s "
                                    f"({params.steps} steps, {mix.shape[1] / rate:.0f} s of audio): try fewer "
                                    f"steps or a shorter mix") from None
        except BackPressureError:
            raise RequestError(503, "every generator replica's queue is full: retry shortly",
                               headers={"Retry-After": "2"}) from None
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            log.warning("generator replica unavailable: %s", exc)
            raise RequestError(503, "the generator replica is restarting: retry shortly",
                               headers={"Retry-After": "5"}) from None
        except Exception as exc:  # the model failed: the client cannot fix it, so 500 with the cause
            log.exception("generation failed")
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            raise RequestError(500, f"generation failed: {type(exc).__name__}: {first_line}") from None

        return await run_in_threadpool(to_input_format, bass, model_rate, rate, mix.shape[0], mix.shape[1])


class AppArgs(BaseModel):
    """Arguments of ``build_app`` (``serve run bassray.serving.app:build_app key=value ...`` passes strings;
    pydantic converts them)."""
    bundle: str | None = Field(None, description="diffusion bundle folder, URI (s3://bucket/bundles/x) or "
                                                  "registry model (models:/NAME/VERSION, /latest or @ALIAS; "
                                                  "default: env BASSRAY_BUNDLE)")
    tracking_uri: str | None = Field(None, description="MLflow tracking server for models:/ (default: env "
                                                        "MLFLOW_TRACKING_URI, else the store in $BASSRAY_HOME)")
    bundle_cache: str | None = Field(None, description="where each node keeps fetched bundles (default: env "
                                                        "BASSRAY_BUNDLE_CACHE or ~/.cache/bassray/bundles)")
    device: str = Field("auto", description="torch device for the generator: auto = cuda if available, else cpu")
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$",
                           description="the U-Net's float type: auto = bf16 where the device runs it natively "
                                       "(AVX512-BF16/AMX CPUs, CUDA compute capability 8.0+), else fp32")
    bf16: bool = Field(False, description="the same as precision=bf16 (kept for older configs)")
    torch_threads: int | None = Field(None, ge=1, description="torch threads per generator replica")
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.1, ge=0.0)
    max_upload_mb: float = Field(50.0, gt=0.0, description="per request (mix + style); counted while the body "
                                                           "streams in, larger -> 413")
    max_seconds: float = Field(600.0, gt=0.0, description="per file, from its header; longer -> 413")
    stall_timeout_s: float = Field(30.0, gt=0.0, description="an upload that sends nothing this long -> 408")
    generation_timeout_s: float = Field(300.0, gt=0.0, description="a generation that takes longer -> 504")
    api_keys: list[str] | None = Field(None, description="`name:secret` or `secret` entries; clients send "
                                                         "`Authorization: Bearer <secret>`")
    api_keys_file: str | None = Field(None, description="a file of keys, one per line (default: env "
                                                        "BASSRAY_API_KEYS_FILE)")
    rate_limit_per_minute: int | None = Field(None, ge=1, description="per key and ingress replica; more -> 429")
    require_api_key: bool = Field(False, description="refuse to build without keys (bassray serve sets it "
                                                     "when binding a host other than 127.0.0.1)")
    num_replicas: int = Field(1, ge=1, description="generator replicas when not autoscaling")
    min_replicas: int | None = Field(None, ge=0, description="set max_replicas to autoscale the generator")
    max_replicas: int | None = Field(None, ge=1)
    target_ongoing_requests: float | None = Field(None, gt=0, description="default: max_batch_size")
    cpus_per_replica: float = Field(1.0, ge=0.0)
    gpus_per_replica: float = Field(0.0, ge=0.0)
    ingress_max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(64, ge=-1, description="beyond this, the ingress answers 429; -1 = no limit")
    model: str | None = Field(None, description="registry name the bundle came from (shown in /info)")
    model_version: str | None = Field(None, description="registry version (shown in /info)")
    run_id: str | None = Field(None, description="MLflow run that trained it (shown in /info)")


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The application: ``serve.run(build_app({"bundle": "/path"}))`` or ``serve run bassray.serving.app:build_app
    bundle=/path``. See ``AppArgs`` for every argument."""
    opts = AppArgs(**(args or {}))
    bundle = opts.bundle or os.environ.get("BASSRAY_BUNDLE")
    bundle_cache = opts.bundle_cache or str(default_cache_dir())
    if not bundle:
        raise ValueError("no model bundle: pass bundle=/path/to/diffusion-bundle (or models:/NAME/VERSION) "
                         "or set BASSRAY_BUNDLE")
    registry = {"model": opts.model, "model_version": opts.model_version, "run_id": opts.run_id}
    if is_model_uri(bundle):  # resolved here to fail early; each replica fetches the pinned version
        found = resolve_model_uri(bundle, opts.tracking_uri, bundle_cache)
        bundle = found.pinned_uri
        registry = {"model": found.model, "model_version": found.model_version, "run_id": found.run_id}
    elif is_uri(bundle):  # each replica fetches it into its node's bundle cache
        try:
            open_remote_bundle(bundle)
        except BundleError as exc:
            raise FileNotFoundError(f"{bundle} holds no bundle: {exc}") from exc
    elif not (Path(bundle) / "bundle.json").exists():
        raise FileNotFoundError(f"{bundle} is not a bundle folder (no bundle.json): pass the folder written by "
                                f"jobs/train_ldm.py; on a cluster use storage every node sees, or an s3:// URI")
    else:
        bundle = str(Path(bundle).resolve())
    generator_options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": opts.cpus_per_replica, "num_gpus": opts.gpus_per_replica},
        # Enough requests in flight per replica to fill a batch while the previous one runs.
        "max_ongoing_requests": 2 * opts.max_batch_size}
    if opts.max_replicas is not None:
        generator_options["autoscaling_config"] = {
            "min_replicas": opts.min_replicas if opts.min_replicas is not None else 1,
            "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests or opts.max_batch_size}
    else:
        generator_options["num_replicas"] = opts.num_replicas
    keys = load_api_keys(opts.api_keys, opts.api_keys_file)  # a broken keys file fails here, not per request
    if opts.require_api_key and not keys:
        raise ValueError("this server binds a host other than 127.0.0.1, so it needs API keys: pass "
                         "api_keys=[...] or api_keys_file=PATH, or set BASSRAY_API_KEYS_FILE "
                         "(python -c \"import secrets; print(secrets.token_urlsafe())\" makes one)")
    board = StatsBoard.bind()
    generator = BassGeneratorDeployment.options(**generator_options).bind(
        bundle, device=opts.device, precision="bf16" if opts.bf16 else opts.precision, torch_threads=opts.torch_threads,
        max_batch_size=opts.max_batch_size, batch_wait_timeout_s=opts.batch_wait_timeout_s,
        registry=registry, tracking_uri=opts.tracking_uri, bundle_cache=bundle_cache, stats=board)
    ingress = BassrayIngress.options(max_ongoing_requests=opts.ingress_max_ongoing_requests,
                                     max_queued_requests=opts.max_queued_requests)
    return ingress.bind(generator, board, max_upload_mb=opts.max_upload_mb, max_seconds=opts.max_seconds,
                        stall_timeout_s=opts.stall_timeout_s, generation_timeout_s=opts.generation_timeout_s,
                        # The path, not the secrets: each ingress reads the file (a mounted secret) itself.
                        api_keys=opts.api_keys, api_keys_file=opts.api_keys_file or os.environ.get(API_KEYS_FILE_ENV),
                        rate_limit_per_minute=opts.rate_limit_per_minute)
