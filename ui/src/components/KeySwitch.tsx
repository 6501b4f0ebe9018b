import { acceptOfferedKey, declineOfferedKey, useOfferedKey } from "../auth";
import { ConfirmDialog } from "./ConfirmDialog";

/** Asks before a link's API key replaces the one this browser has (issue 19, finding 9). */
export function KeySwitchDialog() {
  const offered = useOfferedKey();
  return (
    <ConfirmDialog
      open={offered}
      title="Use the key from this link?"
      confirmLabel="Use the new key"
      cancelLabel="Keep current key"
      onConfirm={acceptOfferedKey}
      onCancel={declineOfferedKey}
    >
      <p>
        This link signs you in with a different API key from the one this browser uses. Each key is a tenant: with the new
        key the board shows that tenant&apos;s tasks, and the tasks you submit go to it, not to yours.
      </p>
      <p className="mt-2">Use it only if you expected this link. If you keep your current key, the link&apos;s key is forgotten.</p>
    </ConfirmDialog>
  );
}
