// The exported JSON Schema of confluence/app.sync v1, compiled once with Ajv (draft 2020-12).
import { readFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

export const EVENT_NAME = 'confluence/app.sync';
export const EVENT_VERSION = '1';
export const ROUTING_KEY = 'confluence.app.sync';

export function compileSchema(path) {
  const schema = JSON.parse(readFileSync(path, 'utf8'));
  const ajv = new Ajv2020({ allErrors: false });
  addFormats(ajv);
  ajv.addSchema(schema);
  return {
    validateEvent: ajv.getSchema(schema.$id),
    validateAppSettings: ajv.getSchema(`${schema.$id}#/$defs/AppSettings`),
    errorsText: (errors) => ajv.errorsText(errors),
  };
}
