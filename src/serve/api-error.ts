// Errors the HTTP API answers with, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
// Anything else thrown while serving a request becomes a 500 "server_error" and the server goes on.

/** OpenAI answers 400, 401, 404 and 413 as invalid_request_error too. */
export type ApiErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error';

export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 about one request field. */
export function badParam(param: string, message: string, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

/** The error to answer for anything thrown while handling a request. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ApiError(500, `The server had an error while processing your request: ${message}`, 'server_error');
}
