/* Handlers of the AIOS kernel routes (aios_routes.c). */
#ifndef AIOS_API_AIOS_ROUTES_H
#define AIOS_API_AIOS_ROUTES_H

#include "api/api.h"

enum MHD_Result api_route_core_status(struct api_req *r);
enum MHD_Result api_route_llms_list(struct api_req *r);
enum MHD_Result api_route_select_llms(struct api_req *r);
enum MHD_Result api_route_selected_llms(struct api_req *r);
enum MHD_Result api_route_core_refresh(struct api_req *r);
enum MHD_Result api_route_config_update(struct api_req *r);
enum MHD_Result api_route_core_cleanup(struct api_req *r);
enum MHD_Result api_route_agents_submit(struct api_req *r);
enum MHD_Result api_route_agents_ps(struct api_req *r);
enum MHD_Result api_route_agents_accounting(struct api_req *r);
enum MHD_Result api_route_agent_status(struct api_req *r);
enum MHD_Result api_route_agent_kill(struct api_req *r);
enum MHD_Result api_route_agent_logs(struct api_req *r);
enum MHD_Result api_route_mcp_server(struct api_req *r);

#endif
