// syncgate's error contract: a status, a stable code, and `{"error": {code, message, details}}`.
export class GatewayError extends Error {
  constructor(status, code, message, { details = [], headers = undefined } = {}) {
    super(message);
    this.statusCode = status;
    this.code = code;
    this.details = details;
    this.headers = headers;
  }
}

export const notAuthenticated = (message) => new GatewayError(401, 'not_authenticated', message);
export const csrfFailed = (message) => new GatewayError(403, 'csrf_failed', message);
export const malformedJson = (message) => new GatewayError(400, 'malformed_json', message);
export const unsupportedMediaType = () =>
  new GatewayError(415, 'unsupported_media_type', 'send the body as application/json');
export const validationFailed = (message, details = []) =>
  new GatewayError(422, 'validation_failed', message, { details });
export const brokerUnavailable = (message, retryAfter) =>
  new GatewayError(503, 'broker_unavailable', message, { headers: { 'retry-after': String(retryAfter) } });
