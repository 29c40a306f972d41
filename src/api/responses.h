/* Route handlers of OpenAI's Responses API (responses.c). */
#ifndef AIOS_API_RESPONSES_H
#define AIOS_API_RESPONSES_H

#include "api/api.h"

enum MHD_Result api_responses_create(struct api_req *r); /* POST /v1/responses */
enum MHD_Result api_responses_get(struct api_req *r);    /* GET /v1/responses/{id} */
enum MHD_Result api_responses_delete(struct api_req *r); /* DELETE /v1/responses/{id} */
/* The pure part of POST /v1/responses (also what tests/fuzz/fuzz_responses.c
 * runs): the body (and the stored chain its previous_response_id names, from
 * k->responses) into the chat completions body it stands for. 0 and *chat,
 * or an error with *status (400, 404) and a message. */
int api_responses_parse(struct kernel *k, json_t *body, json_t **chat, bool *stream,
                        unsigned *status, char *err, size_t errlen);

#endif
