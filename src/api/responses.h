/* Route handlers of OpenAI's Responses API (responses.c). */
#ifndef AIOS_API_RESPONSES_H
#define AIOS_API_RESPONSES_H

#include "api/api.h"

enum MHD_Result api_responses_create(struct api_req *r); /* POST /v1/responses */
enum MHD_Result api_responses_get(struct api_req *r);    /* GET /v1/responses/{id} */
enum MHD_Result api_responses_delete(struct api_req *r); /* DELETE /v1/responses/{id} */

#endif
